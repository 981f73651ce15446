from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from apps.accounts import sso, views
from apps.accounts.forms import InvitationAwarePasswordResetForm

urlpatterns = [
    path("accounts/login/", views.PortalLoginView.as_view(), name="login"),
    path("accounts/logout/", sso.SignOutView.as_view(), name="logout"),
    # The redirect URI to register at the identity provider is https://<portal host>/oidc/callback/.
    path("oidc/authenticate/", sso.SSOStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.SSOCallbackView.as_view(), name="oidc_authentication_callback"),
    path("sso/group-mappings/", views.sso_mappings, name="sso-mappings"),
    path("sso/group-mappings/<uuid:mapping_id>/delete/", views.sso_mapping_delete, name="sso-mapping-delete"),
    path("accounts/password/change/", auth_views.PasswordChangeView.as_view(
        template_name="accounts/password_change.html", success_url=reverse_lazy("password_change_done")),
        name="password_change"),
    path("accounts/password/change/done/", auth_views.PasswordChangeDoneView.as_view(
        template_name="accounts/message.html", extra_context={
            "title": "Password changed", "text": "Your new password is in use."}), name="password_change_done"),
    path("accounts/password/reset/", auth_views.PasswordResetView.as_view(
        form_class=InvitationAwarePasswordResetForm, template_name="accounts/password_reset.html",
        email_template_name="accounts/password_reset_email.txt",
        subject_template_name="accounts/password_reset_subject.txt"), name="password_reset"),
    path("accounts/password/reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="accounts/message.html", extra_context={
            "title": "Check your e-mail",
            "text": "If an account uses that address, we have sent it a link to choose a new password."}),
        name="password_reset_done"),
    path("accounts/password/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="accounts/password_reset_confirm.html"), name="password_reset_confirm"),
    path("accounts/password/reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="accounts/message.html", extra_context={
            "title": "Password set", "text": "You can now sign in with your new password.",
            "link": ("login", "Sign in")}), name="password_reset_complete"),
    path("account/tokens/", views.tokens, name="tokens"),
    path("account/tokens/<uuid:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("notifications/", views.notification_list, name="notification-list"),
    path("notifications/read-all/", views.notification_read_all, name="notification-read-all"),
    path("notifications/<uuid:notification_id>/open/", views.notification_open, name="notification-open"),
    path("projects/", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("projects/switch/", views.project_switch, name="project-switch"),
    path("projects/<slug:slug>/", views.project_detail, name="project-detail"),
    path("projects/<slug:slug>/members/", views.members, name="project-members"),
    path("projects/<slug:slug>/members/<str:username>/role/", views.member_role, name="member-role"),
    path("projects/<slug:slug>/members/<str:username>/remove/", views.member_remove, name="member-remove"),
    path("users/<str:username>/deactivate/", views.user_access, {"activate": False}, name="user-deactivate"),
    path("users/<str:username>/activate/", views.user_access, {"activate": True}, name="user-activate"),
]
