from django.contrib.auth import views as auth_views
from django.urls import path

from domains import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path(
        "signin/",
        auth_views.LoginView.as_view(
            template_name="domains/signin.html", redirect_authenticated_user=True
        ),
        name="signin",
    ),
    path("signout/", auth_views.LogoutView.as_view(), name="signout"),
    path("domains/", views.dashboard, name="dashboard"),
]
