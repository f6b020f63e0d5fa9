"""The platform staff's console for users, domains, roles, memberships and invitations."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Count

from cubeai import jsonbody
from cubeai.exceptions import DomainError
from domains.models import AuditEvent, Domain, Invitation, Membership, Role, User
from domains.selectors import Actor


class DomainMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "domain"
    extra = 0
    autocomplete_fields = ["user"]


class UserMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "user"
    extra = 0
    autocomplete_fields = ["domain"]
    verbose_name_plural = "domains"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_active", "is_staff", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    list_filter = ["is_active", "is_staff", "is_superuser"]
    inlines = [UserMembershipInline]


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    formfield_overrides = jsonbody.ADMIN_FORMFIELDS
    list_display = ["name", "route", "status", "members", "created_at", "deleted_at"]
    list_filter = ["status", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "route", "id"]
    readonly_fields = ["id", "created_at", "updated_at"]
    inlines = [DomainMembershipInline]
    actions = ["enable", "disable", "freeze"]

    def get_readonly_fields(self, request, obj=None):
        # The route is permanent once the domain exists.
        return [*self.readonly_fields, "route"] if obj else self.readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def members(self, obj) -> int:
        return obj.member_count

    def _set_status(self, request, queryset, status: str) -> None:
        from domains import services

        done = 0
        for domain in queryset:
            try:
                services.domain_set_status(
                    actor=Actor.staff(request.user), domain=domain, status=status
                )
            except DomainError as exc:
                self.message_user(request, f"{domain}: {exc.message}", level=messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"{done} domain(s) now {status}.")

    @admin.action(description="Enable selected domains")
    def enable(self, request, queryset):
        self._set_status(request, queryset, Domain.Status.ENABLED)

    @admin.action(description="Disable selected domains")
    def disable(self, request, queryset):
        self._set_status(request, queryset, Domain.Status.DISABLED)

    @admin.action(description="Freeze selected domains")
    def freeze(self, request, queryset):
        self._set_status(request, queryset, Domain.Status.FROZEN)


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    formfield_overrides = jsonbody.ADMIN_FORMFIELDS
    list_display = ["name", "domain", "permissions"]
    list_filter = [("domain", admin.EmptyFieldListFilter)]
    search_fields = ["name", "domain__name"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "domain", "role", "created_at"]
    list_filter = ["role__name"]
    search_fields = ["user__email", "domain__name"]
    autocomplete_fields = ["user", "domain"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "domain", "role", "status", "invited_by", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["email", "domain__name"]
    # Invitations are created by domain admins, with a link only the invitee receives.
    exclude = ["token_digest"]
    readonly_fields = ["domain", "email", "role", "invited_by", "created_at", "responded_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected pending invitations")
    def revoke(self, request, queryset):
        from domains import services

        done = 0
        for invitation in queryset.filter(status=Invitation.Status.PENDING):
            services.invitation_revoke(
                actor=Actor.staff(request.user), domain=invitation.domain, invitation=invitation
            )
            done += 1
        self.message_user(request, f"{done} invitation(s) revoked.")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by services, never edited."""

    list_display = ["created_at", "domain", "actor", "token_id", "action", "target"]
    list_filter = ["action"]
    search_fields = ["domain__name", "actor__email", "target"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
