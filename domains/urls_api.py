"""The management API for domains, members, roles, invitations and model access."""

from django.urls import path

from domains import views_api as views

urlpatterns = [
    path("domains/", views.DomainListView.as_view(), name="api-domains"),
    path("domains/<uuid:domain_id>/", views.DomainDetailView.as_view(), name="api-domain"),
    path("domains/<uuid:domain_id>/members/", views.MemberListView.as_view(), name="api-members"),
    path(
        "domains/<uuid:domain_id>/members/<id:user_id>/",
        views.MemberDetailView.as_view(),
        name="api-member",
    ),
    path("domains/<uuid:domain_id>/roles/", views.RoleListView.as_view(), name="api-roles"),
    path(
        "domains/<uuid:domain_id>/roles/<id:role_id>/",
        views.RoleDetailView.as_view(),
        name="api-role",
    ),
    path(
        "domains/<uuid:domain_id>/invitations/",
        views.InvitationListView.as_view(),
        name="api-invitations",
    ),
    path(
        "domains/<uuid:domain_id>/invitations/<id:invitation_id>/",
        views.InvitationDetailView.as_view(),
        name="api-invitation",
    ),
    path(
        "domains/<uuid:domain_id>/invitations/<id:invitation_id>/resend/",
        views.InvitationResendView.as_view(),
        name="api-invitation-resend",
    ),
    path("domains/<uuid:domain_id>/audit/", views.AuditListView.as_view(), name="api-audit"),
    path("invitations/", views.MyInvitationListView.as_view(), name="api-my-invitations"),
    path("invitations/accept/", views.InvitationAcceptView.as_view(), name="api-invitation-accept"),
    path(
        "invitations/decline/",
        views.InvitationDeclineView.as_view(),
        name="api-invitation-decline",
    ),
]
