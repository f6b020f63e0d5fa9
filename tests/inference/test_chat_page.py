"""The chat page: who sees it and its tab, and which models it offers."""

from inference.models import Model, ModelAccess


def test_a_member_with_chat_gets_the_page_with_the_domains_chat_models_only(client, alice, domain):
    Model.objects.create(name="talker", tasks=["chat"])
    Model.objects.create(name="embedder", tasks=["embedding"])
    denied = Model.objects.create(name="denied-talker", tasks=["chat"])
    Model.objects.create(name="private-talker", tasks=["chat"], public=False)
    ModelAccess.objects.create(domain=domain, model=denied, allowed=False)
    client.force_login(alice)
    page = client.get(f"/domains/{domain.pk}/chat/").content.decode()
    assert f'href="/domains/{domain.pk}/chat/" aria-current="page"' in page
    assert f'data-ws-path="/ws/domains/{domain.pk}/chat/"' in page
    assert '<option value="talker">talker</option>' in page
    for absent in ("embedder", "denied-talker", "private-talker"):
        assert absent not in page
    assert "/static/cubeai/chat.js" in page


def test_a_viewer_gets_neither_the_tab_nor_the_page(client, bob, domain):
    client.force_login(bob)
    assert (
        f"/domains/{domain.pk}/chat/" not in client.get(f"/domains/{domain.pk}/").content.decode()
    )
    assert client.get(f"/domains/{domain.pk}/chat/").status_code == 403


def test_an_outsider_gets_404(client, charlie, domain):
    client.force_login(charlie)
    assert client.get(f"/domains/{domain.pk}/chat/").status_code == 404
