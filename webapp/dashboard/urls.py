from django.contrib.auth import views as auth_views
from django.urls import path

from webapp.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz/", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("teams/switch/", views.team_switch, name="team_switch"),
    path("teams/new/", views.team_new, name="team_new"),
    path("teams/", views.team_list_view, name="team_list"),
    path("teams/<slug:slug>/", views.team_detail, name="team_detail"),
    path("teams/<slug:slug>/invite/", views.team_invite, name="team_invite"),
    path("teams/<slug:slug>/members/<str:username>/role/", views.team_member_role, name="team_member_role"),
    path("teams/<slug:slug>/members/<str:username>/remove/", views.team_member_remove, name="team_member_remove"),
    path("teams/<slug:slug>/invitations/<int:pk>/cancel/", views.team_invitation_cancel,
         name="team_invitation_cancel"),
    path("invitations/<int:pk>/accept/", views.invitation_answer, {"answer": "accept"}, name="invitation_accept"),
    path("invitations/<int:pk>/decline/", views.invitation_answer, {"answer": "decline"},
         name="invitation_decline"),
    path("models/", views.model_list_view, name="model_list"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("models/<int:pk>/rescan/", views.model_rescan_view, name="model_rescan"),
    path("models/<int:pk>/delete/", views.model_delete_view, name="model_delete"),
    path("models/<int:pk>/store/", views.model_store_view, name="model_store"),
    path("storage/", views.storage_view, name="storage"),
    path("pairs/", views.pair_list_view, name="pair_list"),
    path("pairs/<int:pk>/", views.pair_detail, name="pair_detail"),
    path("pairs/<int:pk>/delete/", views.pair_delete_view, name="pair_delete"),
    path("pairs/<int:pk>/import/", views.artifact_import_view, name="artifact_import"),
    path("datasets/", views.dataset_list_view, name="dataset_list"),
    path("datasets/<int:pk>/delete/", views.dataset_delete_view, name="dataset_delete"),

    path("gradients/", views.gradient_set_list_view, name="gradient_set_list"),
    path("gradients/<int:pk>/", views.gradient_set_detail, name="gradient_set_detail"),
    path("jobs/", views.job_list_view, name="job_list"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job_retry"),
    path("workers/", views.worker_list_view, name="worker_list"),
    path("jobs/<int:pk>/delete/", views.job_delete_view, name="job_delete"),
    path("jobs/<int:pk>/pin/", views.job_pin_view, name="job_pin"),
    path("artifacts/<int:pk>/download/", views.artifact_download, name="artifact_download"),
    path("artifacts/<int:pk>/delete/", views.artifact_delete_view, name="artifact_delete"),
    path("tokens/", views.tokens, name="tokens"),
]
