"""Teams in the browser: the team page (members, roles), an invitation accepted by the invitee, the current team
that does not move, and the product's own 404 page, on the real stack."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_e2e_stack import login

pytestmark = pytest.mark.e2e


def test_invite_accept_and_the_team_page(stack, accounts, browser, context, api_alice, screenshots):
    alice = context.new_page()
    login(alice, "alice")
    alice.click("#nav-team")
    expect(alice.locator("h1")).to_have_text("Acme")
    expect(alice.locator('tr[data-member="alice"]')).to_contain_text("(you)")
    expect(alice.locator('a[href="/teams/new/"]')).to_have_count(1)
    alice.fill("#id_username", "bob")
    alice.select_option("#id_role", "viewer")
    alice.click("#invite button[type=submit]")
    expect(alice.locator(".messages")).to_contain_text("join when they accept")
    expect(alice.locator('#invite tr[data-invitation-id]')).to_contain_text("bob")
    expect(alice.locator('tr[data-member="bob"]')).to_have_count(0)  # not a member before accepting

    bob_context = browser.new_context(base_url=stack.base_url)
    try:
        bob = bob_context.new_page()
        login(bob, "bob")
        bob.click("#nav-invitations")
        bob.click("#invitations button:has-text('Accept')")
        expect(bob.locator(".messages")).to_contain_text("You joined Acme as viewer")
        # joining did not switch bob's current team: the header still shows his own
        expect(bob.locator("#team-switch select option[selected]")).to_have_text("Other")
        bob.screenshot(path=str(screenshots / "teams-bob.png"), full_page=True)

        alice.reload()
        row = alice.locator('tr[data-member="bob"]')
        expect(row.locator("select")).to_have_value("viewer")
        row.locator("select").select_option("member")
        row.locator("button:has-text('Change')").click()
        expect(alice.locator('tr[data-member="bob"] select')).to_have_value("member")
        alice.screenshot(path=str(screenshots / "teams-alice.png"), full_page=True)
        alice.once("dialog", lambda dialog: dialog.accept())
        alice.locator('tr[data-member="bob"] button:has-text("Remove")').click()
        expect(alice.locator('tr[data-member="bob"]')).to_have_count(0)
    finally:
        bob_context.close()
        api_alice.call("DELETE", "/api/v1/teams/acme/members/bob/")  # leave the shared stack as it was


def test_an_unknown_page_is_the_products_404(context):
    page = context.new_page()
    login(page, "alice")
    response = page.goto("/no/such/page/")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    assert "URLconf" not in page.content()
