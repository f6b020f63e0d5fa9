"""Sign-up, sign-in and sign-out pages."""

from django.contrib.auth import get_user_model

from tests.conftest import PASSWORD


def test_it_signs_up_and_lands_on_the_dashboard(client, db):
    response = client.post(
        "/signup/",
        {"email": "Dora@Example.com", "name": "Dora", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/domains/"
    user = get_user_model().objects.get(email="dora@example.com")
    assert user.check_password(PASSWORD)
    assert client.get("/domains/").status_code == 200


def test_it_refuses_a_duplicate_email_on_sign_up(client, alice):
    response = client.post(
        "/signup/",
        {"email": "ALICE@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert get_user_model().objects.count() == 1


def test_it_refuses_a_weak_password(client, db):
    response = client.post(
        "/signup/", {"email": "eve@example.com", "password1": "123", "password2": "123"}
    )
    assert response.status_code == 400
    assert not get_user_model().objects.filter(email="eve@example.com").exists()


def test_it_signs_in_with_email_and_password(client, alice):
    response = client.post("/signin/", {"username": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/domains/").status_code == 200


def test_it_rejects_a_wrong_password(client, alice):
    response = client.post("/signin/", {"username": "alice@example.com", "password": "nope"})
    assert response.status_code == 200
    assert "correct email" in response.content.decode()
    assert client.get("/domains/").status_code == 302


def test_sign_in_is_csrf_protected(alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/signin/", {"username": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 403


def test_it_signs_out_on_post(client, alice):
    client.force_login(alice)
    response = client.post("/signout/")
    assert response.status_code == 302
    assert client.get("/domains/").status_code == 302


def test_the_dashboard_needs_a_signed_in_user(client, db):
    response = client.get("/domains/")
    assert response.status_code == 302
    assert response["Location"].startswith("/signin/")
