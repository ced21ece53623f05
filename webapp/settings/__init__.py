"""Settings per environment: ``base`` (shared, configured from the environment), ``local``, ``production``,
``test``. Pick one with ``DJANGO_SETTINGS_MODULE``."""
