"""The platform staff's console for users, domains, roles, memberships and invitations."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from domains.models import Domain, Invitation, Membership, Role, User


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


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "route", "status", "created_at", "deleted_at"]
    list_filter = ["status"]
    search_fields = ["name", "route", "id"]
    readonly_fields = ["id", "created_at", "updated_at"]
    inlines = [MembershipInline]
    actions = ["enable", "disable", "freeze"]

    def get_readonly_fields(self, request, obj=None):
        # The route is permanent once the domain exists.
        return [*self.readonly_fields, "route"] if obj else self.readonly_fields

    def _set_status(self, request, queryset, status: str) -> None:
        from domains import services

        for domain in queryset:
            services.domain_set_status(actor=request.user, domain=domain, status=status)
        self.message_user(request, f"{queryset.count()} domain(s) now {status}.")

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
    list_display = ["name", "domain", "permissions"]
    list_filter = ["domain"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "domain", "role", "created_at"]
    list_filter = ["role__name"]
    search_fields = ["user__email", "domain__name"]
    autocomplete_fields = ["user", "domain"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "domain", "role", "status", "expires_at"]
    list_filter = ["status"]
    search_fields = ["email", "domain__name"]
    exclude = ["token_digest"]
