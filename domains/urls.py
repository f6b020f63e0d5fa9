from django.contrib.auth import views as auth_views
from django.urls import path

from domains import views
from domains.forms import SignInForm

# Each domain page: (path under /domains/<domain_id>/, view, name).
domain_pages = [
    ("", views.domain_overview, "domain"),
    ("settings/", views.domain_settings, "domain_settings"),
    ("settings/status/", views.domain_status, "domain_status"),
    ("settings/delete/", views.domain_delete, "domain_delete"),
    ("members/", views.domain_members, "domain_members"),
    ("members/<id:user_id>/role/", views.member_role, "member_role"),
    ("members/<id:user_id>/remove/", views.member_remove, "member_remove"),
    ("roles/", views.domain_roles, "domain_roles"),
    ("roles/<id:role_id>/", views.role_edit, "role_edit"),
    ("roles/<id:role_id>/delete/", views.role_delete, "role_delete"),
    ("invitations/", views.domain_invitations, "domain_invitations"),
    ("invitations/<id:invitation_id>/revoke/", views.invitation_revoke, "invitation_revoke"),
    ("invitations/<id:invitation_id>/resend/", views.invitation_resend, "invitation_resend"),
    ("audit/", views.domain_audit, "domain_audit"),
    ("audit/export.csv", views.domain_audit_export, "domain_audit_export"),
]

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path(
        "signin/",
        views.signin_limited(
            auth_views.LoginView.as_view(
                template_name="domains/signin.html",
                authentication_form=SignInForm,
                redirect_authenticated_user=True,
            )
        ),
        name="signin",
    ),
    path("signout/", auth_views.LogoutView.as_view(), name="signout"),
    path("domains/", views.dashboard, name="dashboard"),
    *(
        path(f"domains/<uuid:domain_id>/{route}", view, name=name)
        for route, view, name in domain_pages
    ),
    path("invitations/", views.my_invitations, name="my_invitations"),
    path(
        "invitations/<id:invitation_id>/accept/",
        views.invitation_answer,
        {"answer": "accept"},
        name="invitation_accept",
    ),
    path(
        "invitations/<id:invitation_id>/decline/",
        views.invitation_answer,
        {"answer": "decline"},
        name="invitation_decline",
    ),
    path("invitations/link/<str:token>/", views.invitation_link, name="invitation_link"),
]
