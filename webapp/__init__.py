"""DeltaVault web app: a Django project (settings in ``webapp.settings``) with one app per concern."""
