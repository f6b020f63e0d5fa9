"""Management API operations: parse the body, call a service, shape the answer."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from cubeai.exceptions import NotFound, PermissionDenied
from domains import permissions, selectors, services
from domains.drf import APIView, DomainAPIView, SessionOnly, validated
from domains.models import Role
from domains.serializers import (
    AuditEventOut,
    AuditQuery,
    DomainCreateIn,
    DomainOut,
    DomainUpdateIn,
    InvitationAnswerIn,
    InvitationIn,
    InvitationOut,
    MemberAddIn,
    MemberChangeIn,
    MemberOut,
    MyInvitationOut,
    RoleIn,
    RoleOut,
    RoleUpdateIn,
)


def _role_in_body(domain, role_id: int) -> Role:
    """A role named in a request body: one of another domain is a field error, like a typo."""
    try:
        return selectors.role_get(domain=domain, role_id=role_id)
    except NotFound:
        raise services.Invalid({"role": ["Choose a role of this domain."]}) from None


def _link_base(request) -> str:
    return request.build_absolute_uri("/")


# Domains -------------------------------------------------------------------------------


class DomainListView(APIView):
    """The caller's domains (for a token: those it may act in); create a domain."""

    serializer_class = DomainOut

    def get_permissions(self):
        if self.request.method == "POST":
            # Creating a domain would give a token rights in a domain it was not issued for.
            return [IsAuthenticated(), SessionOnly()]
        return [IsAuthenticated()]

    @extend_schema(responses=DomainOut(many=True))
    def get(self, request):
        domains = list(selectors.domain_list(user=request.user, principal=request.auth))
        granted = {}
        for domain in domains:
            try:
                _, granted[domain.pk] = selectors.domain_for_user(
                    user=request.user, domain_id=domain.pk, principal=request.auth
                )
            except NotFound:
                granted[domain.pk] = None
            except PermissionDenied:
                # A disabled domain is listed, with no rights in force.
                granted[domain.pk] = frozenset()
        visible = [d for d in domains if granted[d.pk] is not None]
        return Response(DomainOut(visible, many=True, context={"permissions": granted}).data)

    @extend_schema(request=DomainCreateIn, responses={201: DomainOut})
    def post(self, request):
        data = validated(DomainCreateIn, request)
        domain = services.domain_create(creator=request.user, **data)
        _, granted = selectors.domain_for_user(user=request.user, domain_id=domain.pk)
        out = DomainOut(domain, context={"permissions": {domain.pk: granted}})
        return Response(out.data, status=status.HTTP_201_CREATED)


class DomainDetailView(DomainAPIView):
    """One domain: any member reads it; `domain:manage` changes or deletes it."""

    serializer_class = DomainOut
    permission_by_method = {"PATCH": permissions.DOMAIN_MANAGE, "DELETE": permissions.DOMAIN_MANAGE}

    def _out(self, domain):
        return DomainOut(domain, context={"permissions": {domain.pk: self.granted}}).data

    def get(self, request, domain_id):
        return Response(self._out(self.domain))

    @extend_schema(request=DomainUpdateIn)
    def patch(self, request, domain_id):
        data = validated(DomainUpdateIn, request)
        new_status = data.pop("status", None)
        with transaction.atomic():
            domain = services.domain_update(actor=self.actor, domain=self.domain, **data)
            if new_status:
                domain = services.domain_set_status(
                    actor=self.actor, domain=domain, status=new_status
                )
        return Response(self._out(domain))

    @extend_schema(responses={204: None})
    def delete(self, request, domain_id):
        services.domain_delete(actor=self.actor, domain=self.domain)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Members -------------------------------------------------------------------------------


class MemberListView(DomainAPIView):
    serializer_class = MemberOut
    permission_by_method = {"GET": permissions.MEMBERS_MANAGE, "POST": permissions.MEMBERS_MANAGE}

    @extend_schema(responses=MemberOut(many=True))
    def get(self, request, domain_id):
        return Response(MemberOut(selectors.member_list(domain=self.domain), many=True).data)

    @extend_schema(request=MemberAddIn, responses={201: MemberOut})
    def post(self, request, domain_id):
        data = validated(MemberAddIn, request)
        membership = services.member_add(
            actor=self.actor,
            domain=self.domain,
            email=data["email"],
            role=_role_in_body(self.domain, data["role"]),
        )
        return Response(MemberOut(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(DomainAPIView):
    serializer_class = MemberOut
    permission_by_method = dict.fromkeys(["GET", "PATCH", "DELETE"], permissions.MEMBERS_MANAGE)

    def get(self, request, domain_id, user_id):
        return Response(MemberOut(selectors.member_get(domain=self.domain, user_id=user_id)).data)

    @extend_schema(request=MemberChangeIn)
    def patch(self, request, domain_id, user_id):
        membership = selectors.member_get(domain=self.domain, user_id=user_id)
        data = validated(MemberChangeIn, request)
        membership = services.member_change_role(
            actor=self.actor,
            domain=self.domain,
            membership=membership,
            role=_role_in_body(self.domain, data["role"]),
        )
        return Response(MemberOut(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request, domain_id, user_id):
        membership = selectors.member_get(domain=self.domain, user_id=user_id)
        services.member_remove(actor=self.actor, domain=self.domain, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Roles ---------------------------------------------------------------------------------


class RoleListView(DomainAPIView):
    serializer_class = RoleOut
    permission_by_method = {"GET": permissions.MEMBERS_MANAGE, "POST": permissions.MEMBERS_MANAGE}

    @extend_schema(responses=RoleOut(many=True))
    def get(self, request, domain_id):
        roles = selectors.role_list(domain=self.domain).order_by("domain_id", "name")
        return Response(RoleOut(roles, many=True).data)

    @extend_schema(request=RoleIn, responses={201: RoleOut})
    def post(self, request, domain_id):
        data = validated(RoleIn, request)
        role = services.role_create(actor=self.actor, domain=self.domain, **data)
        return Response(RoleOut(role).data, status=status.HTTP_201_CREATED)


class RoleDetailView(DomainAPIView):
    serializer_class = RoleOut
    permission_by_method = dict.fromkeys(["GET", "PATCH", "DELETE"], permissions.MEMBERS_MANAGE)

    def get(self, request, domain_id, role_id):
        return Response(RoleOut(selectors.role_get(domain=self.domain, role_id=role_id)).data)

    @extend_schema(request=RoleUpdateIn)
    def patch(self, request, domain_id, role_id):
        role = selectors.role_get(domain=self.domain, role_id=role_id)
        data = validated(RoleUpdateIn, request)
        role = services.role_update(actor=self.actor, domain=self.domain, role=role, **data)
        return Response(RoleOut(role).data)

    @extend_schema(responses={204: None})
    def delete(self, request, domain_id, role_id):
        role = selectors.role_get(domain=self.domain, role_id=role_id)
        services.role_delete(actor=self.actor, domain=self.domain, role=role)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Invitations (the domain's side) -------------------------------------------------------


class InvitationListView(DomainAPIView):
    serializer_class = InvitationOut
    permission_by_method = {"GET": permissions.MEMBERS_MANAGE, "POST": permissions.MEMBERS_MANAGE}

    @extend_schema(responses=InvitationOut(many=True))
    def get(self, request, domain_id):
        return Response(
            InvitationOut(selectors.invitation_list(domain=self.domain), many=True).data
        )

    @extend_schema(request=InvitationIn, responses={201: InvitationOut})
    def post(self, request, domain_id):
        data = validated(InvitationIn, request)
        invitation, _ = services.invitation_send(
            actor=self.actor,
            domain=self.domain,
            email=data["email"],
            role=_role_in_body(self.domain, data["role"]),
            link_base=_link_base(request),
        )
        return Response(InvitationOut(invitation).data, status=status.HTTP_201_CREATED)


class InvitationDetailView(DomainAPIView):
    """One invitation; DELETE revokes it (the row stays, for the record)."""

    serializer_class = InvitationOut
    permission_by_method = {"GET": permissions.MEMBERS_MANAGE, "DELETE": permissions.MEMBERS_MANAGE}

    def get(self, request, domain_id, invitation_id):
        invitation = selectors.invitation_get(domain=self.domain, invitation_id=invitation_id)
        return Response(InvitationOut(invitation).data)

    @extend_schema(responses={200: InvitationOut})
    def delete(self, request, domain_id, invitation_id):
        invitation = selectors.invitation_get(domain=self.domain, invitation_id=invitation_id)
        invitation = services.invitation_revoke(
            actor=self.actor, domain=self.domain, invitation=invitation
        )
        return Response(InvitationOut(invitation).data)


class InvitationResendView(DomainAPIView):
    serializer_class = InvitationOut
    permission_by_method = {"POST": permissions.MEMBERS_MANAGE}

    @extend_schema(request=None)
    def post(self, request, domain_id, invitation_id):
        invitation = selectors.invitation_get(domain=self.domain, invitation_id=invitation_id)
        invitation, _ = services.invitation_resend(
            actor=self.actor,
            domain=self.domain,
            invitation=invitation,
            link_base=_link_base(request),
        )
        return Response(InvitationOut(invitation).data)


# Audit ---------------------------------------------------------------------------------


class AuditPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 500


class AuditListView(DomainAPIView):
    serializer_class = AuditEventOut
    pagination_class = AuditPagination
    permission_by_method = {"GET": permissions.AUDIT_READ}

    def get_queryset(self):
        query = AuditQuery(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.audit_list(domain=self.domain, **query.validated_data)

    @extend_schema(parameters=[AuditQuery], responses=AuditEventOut(many=True))
    def get(self, request, domain_id):
        """The domain's administrative audit events, newest first, filtered, paginated
        (`limit`, `offset`)."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(AuditEventOut(page, many=True).data)


# Invitations (the invitee's side) ------------------------------------------------------


class MyInvitationListView(APIView):
    """Open invitations addressed to the signed-in user's email."""

    serializer_class = MyInvitationOut
    permission_classes = [IsAuthenticated, SessionOnly]

    @extend_schema(responses=MyInvitationOut(many=True))
    def get(self, request):
        invitations = selectors.invitation_list_for_user(user=request.user)
        return Response(MyInvitationOut(invitations, many=True).data)


class _InvitationAnswerView(APIView):
    serializer_class = MyInvitationOut
    # Joining a domain is the person's own decision: never a token's.
    permission_classes = [IsAuthenticated, SessionOnly]

    def _invitation(self, request):
        data = validated(InvitationAnswerIn, request)
        if data.get("token"):
            return selectors.invitation_for_token(token=data["token"])
        return selectors.invitation_get_for_user(user=request.user, invitation_id=data["id"])


class InvitationAcceptView(_InvitationAnswerView):
    @extend_schema(request=InvitationAnswerIn, responses={200: MyInvitationOut})
    def post(self, request):
        invitation = self._invitation(request)
        services.invitation_accept(user=request.user, invitation=invitation)
        invitation.refresh_from_db()
        return Response(MyInvitationOut(invitation).data)


class InvitationDeclineView(_InvitationAnswerView):
    @extend_schema(request=InvitationAnswerIn, responses={200: MyInvitationOut})
    def post(self, request):
        invitation = services.invitation_decline(
            user=request.user, invitation=self._invitation(request)
        )
        return Response(MyInvitationOut(invitation).data)
