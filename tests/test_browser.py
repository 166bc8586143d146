"""The browser chat, end to end: Debian's headless Chromium driven by Playwright against the real
server process, the way a person uses it.

Every page a test opens is watched (`browser_support.PageWatch`): when the test ends, no request
may have left the page's origin, and the page may have logged no console error and thrown no
exception, except the network and HTTP-refusal lines Chromium prints for what a test provokes
on purpose. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    NETWORK_FAILURE,
    PageWatch,
    TcpProxy,
    http_status_failure,
    origin_of,
)
from chatserver import (
    ARTIFACTS,
    REPO,
    ChatServer,
    RecordingClient,
    require_program,
    wait_until,
)
from playwright.sync_api import Browser, Page, expect, sync_playwright
from redis_support import RedisServer

pytestmark = pytest.mark.browser

SCREENSHOTS = ARTIFACTS / "screenshots"
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

expect.set_options(timeout=10_000)
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_serial)}"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def screenshots_everywhere(page: Page, name: str) -> list[Path]:
    """`name` at 1280x800 and 390x844, light and dark (the page is left at 1280x800, light)."""
    paths = []
    for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.wait_for_timeout(300)  # the layout settles (drawers slide at a width change)
            paths.append(screenshot(page, f"{name}-{size_name}-{scheme}"))
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    return paths


@dataclass
class Person:
    """One person in their own browser context (own cookies, own storage)."""

    name: str
    base_url: str
    page: Page
    watch: PageWatch

    def sign_up(self) -> Person:
        self.page.goto(self.base_url + "/login")
        self.page.fill("#username", self.name)
        self.page.fill("#password", PASSWORD)
        self.page.get_by_role("button", name="Create account").click()
        expect(self.page).to_have_url(self.base_url + "/")
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "connected")
        return self

    def join(self, room: str) -> None:
        self.page.fill("#join-input", room)
        self.page.press("#join-input", "Enter")
        expect(self.page.locator("#room-title")).to_have_text(f"#{room}")
        expect(self.page.locator("#composer-input")).to_be_focused()

    def open_room(self, room: str) -> None:
        self.page.locator(f'#my-rooms .room-button[data-room="{room}"]').click()
        expect(self.page.locator("#room-title")).to_have_text(f"#{room}")

    def say(self, text: str) -> None:
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    def messages(self) -> list[dict[str, Any]]:
        """The confirmed messages of the room in view, top to bottom."""
        return self.page.eval_on_selector_all(  # type: ignore[no-any-return]
            "#messages .message[data-id]",
            """items => items.map(item => ({
                id: Number(item.dataset.id),
                user: item.dataset.user,
                text: item.querySelector('.message-text').textContent,
                own: item.classList.contains('own'),
                time: item.querySelector('time').textContent,
                datetime: item.querySelector('time').getAttribute('datetime'),
            }))""",
        )

    def wait_for_texts(self, texts: list[str]) -> list[dict[str, Any]]:
        """Wait until the room in view shows exactly these texts, in this order."""
        wait_until(lambda: [m["text"] for m in self.messages()] == texts, timeout=10)
        return self.messages()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_program("chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_person(browser: Browser) -> Iterator[Callable[..., Person]]:
    """Open a browser context for a new person (signed up unless told otherwise).

    When the test ends, each of their pages must have stayed on its origin without errors.
    """
    people: list[Person] = []
    contexts = []

    def open_person(
        base_url: str, name: str | None = None, *, sign_up: bool = True, **options: Any
    ) -> Person:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        person = Person(name or unique("user"), base_url, page, PageWatch(page))
        people.append(person)
        return person.sign_up() if sign_up else person

    yield open_person
    try:
        for person in people:
            person.watch.assert_clean(origin_of(person.base_url))
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def proxy(chat_server: ChatServer) -> Iterator[TcpProxy]:
    relay = TcpProxy(chat_server.port)
    yield relay
    relay.close()


def socket_user(server: ChatServer, room: str, name: str | None = None) -> RecordingClient:
    """Someone on a plain Socket.IO client (no browser), already in `room`."""
    client = server.socket(server.login(name or unique("bot")))
    assert client.request("join", {"room": room})["ok"]
    return client


# -- the login page ---------------------------------------------------------------------------


def test_login_page_explains_each_refusal_then_signs_in(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    person = open_person(chat_server.url, sign_up=False)
    page = person.page
    person.watch.allow(http_status_failure(400, 401, 409))
    page.goto(chat_server.url + "/login")
    expect(page.locator("#username")).to_be_focused()
    screenshot(page, "login")
    message = page.locator("#auth-message")
    create = page.get_by_role("button", name="Create account")
    log_in = page.get_by_role("button", name="Log in")

    page.fill("#username", "no spaces!")
    page.fill("#password", PASSWORD)
    create.click()
    expect(message).to_contain_text("letters, digits, or _ . -")
    expect(page.locator("#username")).to_have_attribute("aria-invalid", "true")

    page.fill("#username", person.name)
    page.fill("#password", "short")
    create.click()
    expect(message).to_contain_text("too weak: use at least 8 characters")
    expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")

    taken = unique("taken")
    assert chat_server.register(taken).status_code == 201
    page.fill("#username", taken)
    page.fill("#password", PASSWORD)
    create.click()
    expect(message).to_contain_text(f"The name “{taken}” is already taken")

    page.fill("#username", taken)
    page.fill("#password", "not the password")
    log_in.click()
    expect(message).to_have_text("Wrong username or password.")
    expect(message).to_have_attribute("role", "alert")
    screenshot(page, "login-wrong-password")

    # Enter in the password field logs in (the form's first action).
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    expect(page).to_have_url(chat_server.url + "/")
    expect(page.locator(".account-name")).to_have_text(taken)


def guessing_past_the_login_limit(
    start_server: Callable[..., ChatServer],
    open_person: Callable[..., Person],
    limit: str,
    allowed: int,
) -> tuple[ChatServer, Page]:
    """A login page whose user guessed a wrong password `allowed` times (each refused as
    wrong) under CHAT_LOGIN_RATE_LIMIT_PER_USER=`limit`, then once more: over the limit."""
    server = start_server(env={"CHAT_LOGIN_RATE_LIMIT_PER_USER": limit})
    person = open_person(server.url, sign_up=False)
    person.watch.allow(http_status_failure(401, 429))
    page = person.page
    page.goto(server.url + "/login")
    page.fill("#username", person.name)
    page.fill("#password", "wrong password")
    log_in = page.get_by_role("button", name="Log in")
    for _ in range(allowed):
        log_in.click()
        expect(page.locator("#auth-message")).to_have_text("Wrong username or password.")
    log_in.click()
    return server, page


def test_login_rate_limit_says_how_long_to_wait(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    """Only Log in waits for a login limit, the wait reads in minutes, and it counts down."""
    server, page = guessing_past_the_login_limit(start_server, open_person, "2 per hour", 2)
    log_in = page.get_by_role("button", name="Log in")
    create = page.get_by_role("button", name="Create account")
    expect(page.locator("#auth-message")).to_have_text(
        re.compile(
            r"Too many attempts\. Try again in (59|60) minutes to log in; "
            r"you can create an account now\."
        )
    )
    expect(log_in).to_be_disabled()
    expect(create).to_be_enabled()
    screenshots_everywhere(page, "login-rate-limited")
    # The limit was on that name: another one can be created (and logs in) at once.
    page.fill("#username", unique("newcomer"))
    page.fill("#password", PASSWORD)
    create.click()
    expect(page).to_have_url(server.url + "/")


def test_a_short_login_wait_counts_down_in_seconds(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    _, page = guessing_past_the_login_limit(start_server, open_person, "1 per minute", 1)
    seconds = re.compile(r"Try again in (\d+) seconds? to log in")
    message = page.locator("#auth-message")
    expect(message).to_contain_text(seconds)
    first = int(seconds.search(message.inner_text()).group(1))  # type: ignore[union-attr]
    page.wait_for_timeout(2200)
    later = int(seconds.search(message.inner_text()).group(1))  # type: ignore[union-attr]
    assert 0 < later <= first - 2 and first <= 60, (first, later)
    expect(page.get_by_role("button", name="Create account")).to_be_enabled()


def test_a_registration_limit_leaves_logging_in_open(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    """Only Create account waits for the registration limit, and the wait reads in minutes."""
    server = start_server(env={"CHAT_REGISTER_RATE_LIMIT": "1 per hour"})
    regular = unique("regular")
    assert server.register(regular).status_code == 201  # from this address: the hour's one
    person = open_person(server.url, sign_up=False)
    person.watch.allow(http_status_failure(401, 429))
    page = person.page
    page.goto(server.url + "/login")
    create = page.get_by_role("button", name="Create account")
    log_in = page.get_by_role("button", name="Log in")
    page.fill("#username", person.name)
    page.fill("#password", PASSWORD)
    create.click()
    expect(page.locator("#auth-message")).to_contain_text(
        re.compile(r"Try again in (59|60) minutes to create another; you can log in now\.")
    )
    expect(create).to_be_disabled()
    expect(log_in).to_be_enabled()
    screenshot(page, "login-registration-limited")
    waits = page.evaluate(
        "import('/static/js/login.js').then(page => [3461, 40, 1, 91, 5400, 7500]"
        ".map(page.humanWait))"
    )
    assert waits == [
        "58 minutes", "40 seconds", "1 second", "2 minutes", "90 minutes", "2 hours 5 minutes"
    ]  # fmt: skip
    # A refused login is shown, and the countdown does not write over it: the wait stays on
    # the button.
    page.fill("#username", regular)
    page.fill("#password", "not the password")
    log_in.click()
    expect(page.locator("#auth-message")).to_have_text("Wrong username or password.")
    page.wait_for_timeout(1500)
    expect(page.locator("#auth-message")).to_have_text("Wrong username or password.")
    expect(create).to_be_disabled()
    expect(create).to_have_attribute("title", re.compile(r"Try again in (59|60) minutes"))
    page.fill("#password", PASSWORD)
    log_in.click()
    expect(page).to_have_url(server.url + "/")


def test_logout_ends_the_session_and_returns_to_login(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    person = open_person(chat_server.url)
    expect(person.page.locator("#welcome")).to_contain_text(f"Welcome, {person.name}")
    screenshot(person.page, "welcome")
    person.page.get_by_role("button", name="Log out").click()
    expect(person.page).to_have_url(chat_server.url + "/login")
    expect(person.page.locator("#auth-message")).to_have_text("You have logged out.")
    chat_server.wait_for_event("logout", user=person.name)
    person.page.goto(chat_server.url + "/")
    expect(person.page).to_have_url(chat_server.url + "/login")


# -- chatting ---------------------------------------------------------------------------------


def test_two_people_chat_both_ways_and_another_room_sees_nothing(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room, elsewhere = unique("lounge"), unique("elsewhere")
    # Each reader sees times in their own zone and locale.
    alice = open_person(chat_server.url, timezone_id="Asia/Kolkata", locale="en-GB")
    bob = open_person(chat_server.url, timezone_id="America/New_York", locale="en-US")
    carol = open_person(chat_server.url)
    carol.join(elsewhere)
    alice.join(room)
    bob.join(room)
    expect(alice.page.locator("#members .member")).to_have_count(2)
    expect(alice.page.locator("#room-subtitle")).to_have_text("2 members here")
    expect(alice.page.locator("#messages")).to_have_attribute("role", "log")

    alice.say("hi bob")
    bob.wait_for_texts(["hi bob"])
    bob.page.fill("#composer-input", "line one")
    bob.page.press("#composer-input", "Shift+Enter")
    bob.page.type("#composer-input", "line two")
    bob.page.press("#composer-input", "Enter")
    expected = ["hi bob", "line one\nline two"]
    seen_by_alice = alice.wait_for_texts(expected)
    seen_by_bob = bob.wait_for_texts(expected)

    assert [m["id"] for m in seen_by_alice] == [m["id"] for m in seen_by_bob] == [1, 2]
    assert [(m["user"], m["own"]) for m in seen_by_alice] == [(alice.name, True), (bob.name, False)]
    assert [(m["user"], m["own"]) for m in seen_by_bob] == [(alice.name, False), (bob.name, True)]
    expect(alice.page.locator(".message.own .message-author")).to_have_text("You")
    # The same instant, in each reader's local time.
    sent = datetime.fromisoformat(seen_by_alice[0]["datetime"].replace("Z", "+00:00"))
    assert sent.tzinfo is not None and abs((datetime.now(UTC) - sent).total_seconds()) < 60
    assert seen_by_alice[0]["time"] == sent.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M")
    in_new_york = sent.astimezone(ZoneInfo("America/New_York"))
    assert seen_by_bob[0]["time"] == in_new_york.strftime("%I:%M %p").lstrip("0")
    # Whatever the hour of the run: an hour after midnight, as each locale writes it
    # (19:12 UTC is 00:42 in Kolkata, where en-GB writes "00:42", not "0:42").
    local_time = "import('/static/js/format.js').then((m) => m.localTime(new Date(%r)))"
    instant = "2026-11-26T19:12:00Z"
    assert alice.page.evaluate(local_time % instant) == "00:42"
    assert bob.page.evaluate(local_time % instant).replace("\u202f", " ") == "2:12 PM"

    # Carol, in another room, sees none of it, but sees the room and its count in the list.
    carol_room = carol.page.locator(f'#other-rooms .room-button[data-room="{room}"]')
    expect(carol_room.locator(".room-members")).to_have_text("2 online")
    expect(carol.page.locator("#messages .message")).to_have_count(0)
    assert "hi bob" not in carol.page.content()
    expect(alice.page.locator(f'#members .member[data-user="{carol.name}"]')).to_have_count(0)


def test_user_text_is_shown_as_text_and_never_runs(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("xss")
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    alice.join(room)
    bob.join(room)
    attacks = [
        "<img src=x onerror=alert(1)>",
        "<script>window.pwned = 1</script>",
        '"><svg onload=alert(2)><a href="javascript:alert(3)">click</a>',
    ]
    for text in attacks:
        alice.say(text)
    for person in (alice, bob):
        person.wait_for_texts(attacks)
        assert person.page.locator("#messages img, #messages script, #messages svg").count() == 0
        assert person.page.locator("#messages a").count() == 0
        assert person.page.evaluate("window.pwned") is None
        assert not [url for url in person.watch.requests if url.endswith("/x")]
        assert person.watch.dialogs == []


def test_presence_typing_and_unread_counts(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    first, second = unique("ops"), unique("dev")
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    alice.join(second)
    alice.join(first)
    members = alice.page.locator("#members .member")
    expect(members).to_have_count(1)

    bob.join(first)  # presence: alice's member list grows without a reload
    expect(members).to_have_count(2)
    expect(alice.page.locator(f'#members .member[data-user="{bob.name}"]')).to_be_visible()
    expect(alice.page.locator("#messages .system-note").last).to_have_text(f"{bob.name} joined")

    bob.page.type("#composer-input", "thinking…")
    typing = alice.page.locator("#typing")
    expect(typing).to_have_text(f"{bob.name} is typing…")
    expect(typing).to_have_text("", timeout=8_000)  # it expires by itself

    bob.join(second)
    bob.say("over here")  # alice is looking at the other room
    badge = alice.page.locator(f'#my-rooms .room-button[data-room="{second}"] .room-unread')
    expect(badge).to_have_text("1")
    expect(alice.page).to_have_title(re.compile(r"^\(1\) "))
    alice.open_room(second)
    expect(badge).to_have_count(0)
    alice.wait_for_texts(["over here"])

    bob.open_room(first)
    bob.page.get_by_role("button", name="Leave").click()
    expect(bob.page.locator(f'#my-rooms .room-button[data-room="{first}"]')).to_have_count(0)
    alice.open_room(first)
    expect(members).to_have_count(1)
    expect(alice.page.locator("#messages .system-note").last).to_have_text(f"{bob.name} left")


def direct_id(*names: str) -> str:
    return "_dm:" + ":".join(sorted(name.lower() for name in names))


def log_in(person: Person) -> Person:
    """Log an existing account in on the login page."""
    person.page.goto(person.base_url + "/login")
    person.page.fill("#username", person.name)
    person.page.fill("#password", PASSWORD)
    person.page.get_by_role("button", name="Log in").click()
    expect(person.page).to_have_url(person.base_url + "/")
    expect(person.page.locator("#connection")).to_have_attribute("data-state", "connected")
    return person


def sidebar_text(person: Person) -> str:
    return person.page.locator("#sidebar").inner_text()


def room_drawer_screenshots(page: Page, name: str, drawer: str = "rooms") -> None:
    """The phone's room list (the sidebar drawer; or with `drawer="members"` the member list)
    open, light and dark; then back to desktop."""
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    page.locator(f"#toggle-{drawer}").click()
    expect(page.locator("body")).to_have_class(re.compile(rf"\b{drawer}-open\b"))
    panel = "#sidebar" if drawer == "rooms" else "#members-panel"
    wait_until(lambda: fully_in_view(page, panel))  # after the slide-in
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(300)
        screenshot(page, f"{name}-{'' if drawer == 'rooms' else drawer + '-'}drawer-{scheme}")
    page.keyboard.press("Escape")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    page.wait_for_timeout(300)


def test_a_direct_message_is_between_two_people_and_a_third_sees_nothing(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("commons")
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    carol = open_person(chat_server.url)
    carol.watch.allow(http_status_failure(403))
    alice.join(room)
    bob.join(room)
    carol.join(room)
    dm = direct_id(alice.name, bob.name)

    # Alice starts it from the member list; it opens like a room, under Bob's name.
    alice.page.locator(f'#members .member[data-user="{bob.name}"] .member-dm').click()
    expect(alice.page.locator("#room-title")).to_have_text(bob.name)
    expect(alice.page.locator("#room-subtitle")).to_contain_text("Direct message")
    alice_dm = alice.page.locator(f'#dm-list .room-button[data-room="{dm}"]')
    expect(alice_dm.locator(".room-name")).to_have_text(bob.name)
    expect(alice.page.locator("#composer-input")).to_be_focused()

    # Bob hears of it live (dm_opened), listed under Alice's name, with an unread count.
    bob_dm = bob.page.locator(f'#dm-list .room-button[data-room="{dm}"]')
    expect(bob_dm.locator(".room-name")).to_have_text(alice.name)
    alice.say("just between us")
    expect(bob_dm.locator(".room-unread")).to_have_text("1")
    screenshots_everywhere(bob.page, "dm-unread")
    room_drawer_screenshots(bob.page, "dm-unread")
    bob_dm.click()
    expect(bob.page.locator("#room-title")).to_have_text(alice.name)
    bob.wait_for_texts(["just between us"])
    expect(bob_dm.locator(".room-unread")).to_have_count(0)
    expect(bob.page.locator("#members .member")).to_have_count(2)

    # Typing and presence work as in any room.
    bob.page.type("#composer-input", "ok")
    expect(alice.page.locator("#typing")).to_have_text(f"{bob.name} is typing…")
    bob.page.press("#composer-input", "Enter")
    alice.wait_for_texts(["just between us", "ok"])
    expect(alice.page.locator("#members .member")).to_have_count(2)
    screenshots_everywhere(alice.page, "dm-open")
    for person in (alice, bob):
        assert "_dm:" not in sidebar_text(person)
        assert "_dm:" not in person.page.locator("#room-header").inner_text()
        assert "_dm:" not in person.page.title()

    # Carol sees nothing of it, and the server refuses her the id itself.
    expect(carol.page.locator("#dm-list .room-button")).to_have_count(0)
    expect(carol.page.locator("#dm-empty")).to_be_visible()
    carol.page.fill("#join-input", dm)
    carol.page.press("#join-input", "Enter")
    expect(carol.page.locator("#join-error")).to_have_text(
        "this conversation is private: you need an invitation"
    )
    expect(carol.page.locator("#room-title")).to_have_text(f"#{room}")
    expect(carol.page.locator(f'.room-button[data-room="{dm}"]')).to_have_count(0)
    assert "just between us" not in carol.page.content()
    history = carol.page.request.get(f"{chat_server.url}/rooms/{dm}/messages")
    assert history.status == 403 and history.json()["error"] == "not_invited"
    screenshot(carol.page, "dm-refused")

    # Opened by typing a name while Dave is away: he finds it when he connects.
    dave = open_person(chat_server.url, unique("dave"), sign_up=False)
    chat_server.login(dave.name)
    alice.page.fill("#dm-input", dave.name)
    alice.page.press("#dm-input", "Enter")
    expect(alice.page.locator("#room-title")).to_have_text(dave.name)
    alice.say("when you are back")
    log_in(dave)
    dave_room = direct_id(alice.name, dave.name)
    dave_dm = dave.page.locator(f'#dm-list .room-button[data-room="{dave_room}"]')
    expect(dave_dm.locator(".room-name")).to_have_text(alice.name)
    dave_dm.click()
    expect(dave.page.locator("#room-title")).to_have_text(alice.name)
    dave.wait_for_texts(["when you are back"])
    expect(alice.page.locator("#dm-list .room-button")).to_have_count(2)


def test_a_private_room_is_joined_by_invitation_and_a_third_sees_nothing(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    title = unique("plans")
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    carol = open_person(chat_server.url)

    # Alice creates it with the join form's "private" box; it is listed under its title.
    alice.page.fill("#join-input", title)
    alice.page.check("#join-private")
    alice.page.press("#join-input", "Enter")
    expect(alice.page.locator("#room-title")).to_have_text(title)
    expect(alice.page.locator("#room-subtitle")).to_contain_text("Private room")
    listed = alice.page.locator("#private-rooms .room-button")
    expect(listed.locator(".room-name")).to_have_text(title)
    room = listed.get_attribute("data-room")
    assert room is not None and re.fullmatch(r"_p:[0-9a-f]{16}", room)
    expect(alice.page.locator("#my-rooms .room-button")).to_have_count(0)
    expect(alice.page.locator("#join-private")).not_to_be_checked()
    alice.say("the plan")

    # She invites Bob from the room; the invitation reaches him live, with a Join.
    alice.page.fill("#invite-input", bob.name)
    alice.page.press("#invite-input", "Enter")
    expect(alice.page.locator("#invite-status")).to_have_text(f"Invited {bob.name}.")
    invitation = bob.page.locator(f'#invitations .invitation[data-room="{room}"]')
    expect(invitation.locator(".room-name")).to_have_text(title)
    expect(invitation.locator(".room-members")).to_have_text(f"from {alice.name}")
    screenshots_everywhere(bob.page, "private-invitation")
    room_drawer_screenshots(bob.page, "private-invitation")
    invitation.get_by_role("button", name=re.compile("^Join")).click()
    expect(bob.page.locator("#room-title")).to_have_text(title)
    bob.wait_for_texts(["the plan"])
    expect(bob.page.locator("#invitations-box")).to_be_hidden()
    expect(bob.page.locator(f'#private-rooms .room-button[data-room="{room}"]')).to_have_count(1)
    expect(alice.page.locator("#members .member")).to_have_count(2)
    bob.say("count me in")
    alice.wait_for_texts(["the plan", "count me in"])
    screenshots_everywhere(alice.page, "private-room")
    for person in (alice, bob):
        assert "_p:" not in sidebar_text(person)
        assert "_p:" not in person.page.locator("#room-header").inner_text()

    # Carol sees nothing: not in her lists, not among the active rooms, and the id is refused.
    rooms = carol.page.request.get(chat_server.url + "/rooms").json()
    assert room not in [entry["name"] for entry in rooms]
    expect(carol.page.locator("#private-rooms .room-button")).to_have_count(0)
    expect(carol.page.locator("#invitations-box")).to_be_hidden()
    carol.page.fill("#join-input", room)
    carol.page.press("#join-input", "Enter")
    expect(carol.page.locator("#join-error")).to_have_text(
        "this conversation is private: you need an invitation"
    )
    assert title not in sidebar_text(carol)
    assert "the plan" not in carol.page.content()
    screenshot(carol.page, "private-refused")

    # After a reload Bob finds the room again under its title (the conversations list).
    bob.page.reload()
    expect(bob.page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(
        bob.page.locator(f'#private-rooms .room-button[data-room="{room}"] .room-name')
    ).to_have_text(title)
    expect(bob.page.locator("#room-title")).to_have_text(title)


def create_private_room(person: Person, title: str) -> str:
    """Create a private room from the join form; returns its id (it is then in view)."""
    person.page.fill("#join-input", title)
    person.page.check("#join-private")
    person.page.press("#join-input", "Enter")
    expect(person.page.locator("#room-title")).to_have_text(title)
    room = person.page.locator("#private-rooms .room-button", has_text=title).get_attribute(
        "data-room"
    )
    assert room is not None
    return room


def test_a_direct_message_found_at_login_counts_what_came_while_away(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url, unique("bob"), sign_up=False)
    chat_server.login(bob.name)  # registered, but not on the page: offline
    dm = direct_id(alice.name, bob.name)
    alice.page.fill("#dm-input", bob.name)
    alice.page.press("#dm-input", "Enter")
    expect(alice.page.locator("#room-title")).to_have_text(bob.name)
    alice.say("are you there?")
    alice.say("call me when you are back")
    alice.wait_for_texts(["are you there?", "call me when you are back"])

    # Bob comes: the conversation is under Direct messages with what he has not read.
    log_in(bob)
    bob_dm = bob.page.locator(f'#dm-list .room-button[data-room="{dm}"]')
    expect(bob_dm.locator(".room-name")).to_have_text(alice.name)
    expect(bob_dm.locator(".room-unread")).to_have_text("2")
    expect(bob_dm).to_have_attribute("aria-label", re.compile(r", 2 unread messages$"))
    expect(bob.page).to_have_title(re.compile(r"^\(2\) "))
    expect(bob.page.locator("#welcome")).to_be_visible()  # nothing opens by itself
    screenshots_everywhere(bob.page, "dm-unread-at-login")
    room_drawer_screenshots(bob.page, "dm-unread-at-login")
    bob_dm.click()
    expect(bob.page.locator("#room-title")).to_have_text(alice.name)
    bob.wait_for_texts(["are you there?", "call me when you are back"])
    expect(bob_dm.locator(".room-unread")).to_have_count(0)
    expect(bob.page).not_to_have_title(re.compile(r"^\("))

    # Read here, it counts from there: only what came during his next absence is unread.
    bob.join(unique("elsewhere"))
    bob.page.get_by_role("button", name="Log out").click()
    expect(bob.page).to_have_url(chat_server.url + "/login")
    alice.say("one more thing")
    log_in(bob)
    expect(bob_dm.locator(".room-unread")).to_have_text("1")
    bob_dm.click()
    bob.wait_for_texts(["are you there?", "call me when you are back", "one more thing"])
    expect(bob_dm.locator(".room-unread")).to_have_count(0)


def test_on_a_phone_an_invitation_shows_on_the_closed_room_list_button(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url, viewport=PHONE, device_scale_factor=2)
    title = unique("surprise")
    room = create_private_room(alice, title)
    toggle = bob.page.locator("#toggle-rooms")
    badge = bob.page.locator("#total-unread")
    expect(badge).to_be_hidden()
    expect(toggle).to_have_attribute("aria-label", "Rooms")

    alice.page.fill("#invite-input", bob.name)
    alice.page.press("#invite-input", "Enter")
    expect(alice.page.locator("#invite-status")).to_have_text(f"Invited {bob.name}.")
    expect(badge).to_have_text("1")
    expect(toggle).to_have_attribute("aria-label", "Rooms, 1 invitation")
    assert fully_in_view(bob.page, "#total-unread")
    expect(bob.page.locator("body")).not_to_have_class(re.compile(r"\brooms-open\b"))
    for scheme in ("light", "dark"):
        bob.page.emulate_media(color_scheme=scheme)
        bob.page.wait_for_timeout(300)
        screenshot(bob.page, f"phone-invitation-badge-{scheme}")
    bob.page.emulate_media(color_scheme="light")

    # A direct message adds its unread count to the same badge.
    alice.page.locator(f'#members .member[data-user="{alice.name}"]').wait_for()
    alice.page.fill("#dm-input", bob.name)
    alice.page.press("#dm-input", "Enter")
    expect(alice.page.locator("#room-title")).to_have_text(bob.name)
    alice.say("did you see it?")
    expect(badge).to_have_text("2")
    expect(toggle).to_have_attribute("aria-label", "Rooms, 1 unread message, 1 invitation")

    toggle.click()
    invitation = bob.page.locator(f'#invitations .invitation[data-room="{room}"]')
    expect(invitation).to_be_in_viewport()
    invitation.get_by_role("button", name=re.compile("^Join")).click()
    expect(bob.page.locator("#room-title")).to_have_text(title)
    expect(bob.page.locator("body")).not_to_have_class(re.compile(r"\brooms-open\b"))
    expect(badge).to_have_text("1")
    expect(toggle).to_have_attribute("aria-label", "Rooms, 1 unread message")
    toggle.click()
    dm = direct_id(alice.name, bob.name)
    bob.page.locator(f'#dm-list .room-button[data-room="{dm}"]').click()
    expect(bob.page.locator("#room-title")).to_have_text(alice.name)
    expect(badge).to_be_hidden()
    expect(toggle).to_have_attribute("aria-label", "Rooms")


def test_a_refused_invitation_says_why_and_changes_nothing(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    public = unique("square")
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    alice.join(public)
    bob.join(public)
    # A public room and a direct conversation take no invitations: no form is offered there.
    expect(alice.page.locator("#invite-form")).to_be_hidden()
    alice.page.locator(f'#members .member[data-user="{bob.name}"] .member-dm').click()
    expect(alice.page.locator("#room-title")).to_have_text(bob.name)
    expect(alice.page.locator("#invite-form")).to_be_hidden()

    title = unique("inner")
    room = create_private_room(alice, title)
    invite, status = alice.page.locator("#invite-input"), alice.page.locator("#invite-status")
    for name, reason in (
        ("no spaces!", re.compile(r"^Usernames are 3.32 characters")),  # the page's
        (alice.name.upper(), re.compile("^you are a member of this room already$")),  # server's
    ):
        invite.fill(name)
        invite.press("Enter")
        expect(status).to_have_text(reason)
        expect(status).to_have_class(re.compile(r"\bfield-error\b"))
        expect(invite).to_have_attribute("aria-invalid", "true")
        expect(invite).to_have_value(name)  # kept, to be corrected
        screenshot(alice.page, f"invite-refused-{'page' if ' ' in name else 'server'}")
    screenshots_everywhere(alice.page, "invite-refused")
    room_drawer_screenshots(alice.page, "invite-refused", "members")
    expect(status).to_have_text(re.compile("^you are a member of this room already$"))
    invite.fill(bob.name)  # typing clears the error
    expect(status).to_be_hidden()
    expect(invite).not_to_have_attribute("aria-invalid", "true")
    # Nothing happened: bob has no invitation, alice is still the room's one member.
    expect(bob.page.locator("#invitations-box")).to_be_hidden()
    assert bob.page.request.get(chat_server.url + "/conversations").json()["invitations"] == []
    expect(alice.page.locator("#members .member")).to_have_count(1)
    expect(alice.page.locator("#room-title")).to_have_text(title)
    assert room.startswith("_p:")


def test_leaving_a_private_room_takes_it_away_and_its_id_is_refused(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    alice = open_person(chat_server.url)
    bob = open_person(chat_server.url)
    bob.watch.allow(http_status_failure(403))
    title = unique("council")
    room = create_private_room(alice, title)
    alice.page.fill("#invite-input", bob.name)
    alice.page.press("#invite-input", "Enter")
    bob.page.locator(f'#invitations .invitation[data-room="{room}"]').get_by_role(
        "button", name=re.compile("^Join")
    ).click()
    expect(bob.page.locator("#room-title")).to_have_text(title)
    alice.say("welcome")
    bob.wait_for_texts(["welcome"])
    # Bob has the chat open in a second tab too, in the same room.
    second = bob.page.context.new_page()
    second_watch = PageWatch(second)
    second.goto(chat_server.url + "/")
    expect(second.locator("#room-title")).to_have_text(title)
    second_listed = second.locator(f'#private-rooms .room-button[data-room="{room}"]')
    expect(second_listed).to_have_count(1)

    bob.page.get_by_role("button", name="Leave").click()
    bob_listed = bob.page.locator(f'#private-rooms .room-button[data-room="{room}"]')
    expect(bob_listed).to_have_count(0)
    expect(bob.page.locator("#private-rooms-empty")).to_be_visible()
    expect(bob.page.locator("#welcome")).to_be_visible()
    assert title not in sidebar_text(bob)
    expect(alice.page.locator("#members .member")).to_have_count(1)
    expect(alice.page.locator("#messages .system-note").last).to_have_text(f"{bob.name} left")
    # The other tab lost it too (the server's `removed`), and hears nothing more of it.
    expect(second_listed).to_have_count(0)
    expect(second.locator("#welcome")).to_be_visible()
    alice.say("after you left")
    alice.wait_for_texts(["welcome", "after you left"])
    screenshots_everywhere(bob.page, "private-left")

    # Its id is refused now, with the server's reason under the join form.
    bob.page.fill("#join-input", room)
    bob.page.press("#join-input", "Enter")
    expect(bob.page.locator("#join-error")).to_have_text(
        "this conversation is private: you need an invitation"
    )
    expect(bob_listed).to_have_count(0)
    expect(bob.page.locator("#welcome")).to_be_visible()
    screenshots_everywhere(bob.page, "private-left-refused")
    room_drawer_screenshots(bob.page, "private-left-refused")  # the phone's list shows it
    assert "after you left" not in bob.page.content() + second.content()
    second_watch.assert_clean(chat_server.url)
    second.close()


def test_one_day_divider_per_day_with_join_and_leave_notices_between(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("notices")
    person = open_person(chat_server.url)
    person.join(room)
    person.say("first")
    person.wait_for_texts(["first"])
    expected = ["first"]
    for n in range(2):
        name = unique("visitor")
        visitor = socket_user(chat_server, room, name)
        expect(person.page.locator("#messages .system-note").last).to_have_text(f"{name} joined")
        person.say(f"after join {n}")
        visitor.disconnect()
        expect(person.page.locator("#messages .system-note").last).to_have_text(f"{name} left")
        person.say(f"after leave {n}")
        expected += [f"after join {n}", f"after leave {n}"]
        person.wait_for_texts(expected)
    dividers = person.page.locator("#messages .day-divider:visible")
    expect(dividers).to_have_count(1)
    expect(dividers).to_have_text(re.compile("today", re.I))
    # The divider heads the day's first message.
    expect(person.page.locator("#messages .message").first.locator(".day-divider")).to_be_visible()
    screenshots_everywhere(person.page, "day-divider-once")


def test_an_empty_room_shows_where_it_starts(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    server = start_server(env={"CHAT_HISTORY_LIMIT": "5"})
    room, long_room = unique("fresh"), unique("long")
    person = open_person(server.url)
    person.join(room)
    start = person.page.locator("#messages .room-start")
    expect(start).to_be_visible()
    expect(start.locator(".room-start-title")).to_have_text(f"This is the start of #{room}")
    expect(start.locator(".room-start-text")).not_to_be_empty()
    screenshots_everywhere(person.page, "room-empty")
    # With its whole history loaded, a room still begins with it, above the first message.
    person.say("hello, empty room")
    person.wait_for_texts(["hello, empty room"])
    expect(person.page.locator("#messages .message-list > li").first).to_have_class("room-start")
    expect(start).to_be_in_viewport()
    # Only part of a longer history: no start, the note that earlier messages are not shown.
    bot = socket_user(server, long_room)
    try:
        for n in range(1, 9):
            assert bot.request("message", {"room": long_room, "text": f"m{n}"})["ok"]
        person.join(long_room)
        person.wait_for_texts([f"m{n}" for n in range(4, 9)])
        expect(person.page.locator("#messages .room-start")).to_have_count(0)
        expect(person.page.locator("#messages .history-start")).to_be_visible()
    finally:
        bot.disconnect()


def test_a_short_room_sits_on_the_composer_and_a_long_one_scrolls_from_the_bottom(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("short")
    person = open_person(chat_server.url)
    person.join(room)
    person.say("one")
    person.say("two")
    person.wait_for_texts(["one", "two"])
    page = person.page

    def gap_above_composer() -> float:
        last = page.locator("#messages .message").last.bounding_box()
        composer = page.locator("#composer").bounding_box()
        assert last is not None and composer is not None
        return composer["y"] - (last["y"] + last["height"])

    assert 0 <= gap_above_composer() < 80, gap_above_composer()
    screenshots_everywhere(page, "room-short")
    page.set_viewport_size(PHONE)
    assert 0 <= gap_above_composer() < 80, gap_above_composer()
    page.set_viewport_size(DESKTOP)

    bot = socket_user(chat_server, room)
    try:
        texts = ["one", "two"] + [f"line {n}" for n in range(30)]
        for text in texts[2:]:
            assert bot.request("message", {"room": room, "text": text})["ok"]
        person.wait_for_texts(texts)
        box = page.locator("#messages")
        wait_until(
            lambda: box.evaluate("b => b.scrollHeight - b.scrollTop - b.clientHeight < 2"),
            timeout=5,
        )
        assert box.evaluate("b => b.scrollHeight > b.clientHeight + 200")
        box.evaluate("b => { b.scrollTop = 0; }")
        expect(page.locator("#messages .room-start")).to_be_in_viewport()
    finally:
        bot.disconnect()


def test_unread_badge_and_member_count_cannot_be_mistaken(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    here, there = unique("here"), unique("there")
    person = open_person(chat_server.url)
    person.join(there)
    person.join(here)
    bot = socket_user(chat_server, there)
    try:
        for text in ("one", "two"):
            assert bot.request("message", {"room": there, "text": text})["ok"]
        button = person.page.locator(f'#my-rooms .room-button[data-room="{there}"]')
        badge = button.locator(".room-unread")
        count = button.locator(".room-members")
        expect(badge).to_have_text("2")
        expect(count).to_have_text("2 online")
        expect(badge).to_have_attribute("title", "2 unread messages")
        expect(button).to_have_attribute("aria-label", f"#{there}, 2 online, 2 unread messages")
        # The count sits under the name; the badge is a pill at the far end, away from it.
        parts = button.evaluate(
            """b => {
                const box = (s) => b.querySelector(s).getBoundingClientRect();
                const [name, count, badge] =
                    [box('.room-name'), box('.room-members'), box('.room-unread')];
                const self = b.getBoundingClientRect();
                const style = getComputedStyle(b.querySelector('.room-unread'));
                return {
                    countBelowName: count.top >= name.bottom - 1,
                    gap: badge.left - count.right,
                    badgeAtEnd: self.right - badge.right < 16,
                    badgeLast: b.lastElementChild.classList.contains('room-unread'),
                    pill: parseFloat(style.borderRadius) >= badge.height / 2 - 1,
                    filled: !style.backgroundColor.endsWith(', 0)'),
                };
            }"""
        )
        assert parts["countBelowName"] and parts["badgeAtEnd"] and parts["badgeLast"], parts
        assert parts["gap"] > 40 and parts["pill"] and parts["filled"], parts
        screenshots_everywhere(person.page, "room-list-unread")
        page = person.page
        page.set_viewport_size(PHONE)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.locator("#toggle-rooms").click()  # its name carries the unread total
            wait_until(lambda: fully_in_view(page, "#sidebar"))
            screenshot(page, f"room-list-unread-drawer-{scheme}")
            page.keyboard.press("Escape")
            expect(page.locator("#sidebar")).not_to_be_in_viewport()
    finally:
        bot.disconnect()


def test_keyboard_alone_joins_sends_and_switches_rooms(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room, other = unique("keys"), unique("keys")
    person = open_person(chat_server.url)
    page = person.page
    tab_to(page, "join-input")
    page.keyboard.type(other)
    page.keyboard.press("Enter")
    expect(page.locator("#composer-input")).to_be_focused()
    tab_to(page, "join-input", backwards=True)
    page.keyboard.type(room)
    page.keyboard.press("Enter")
    expect(page.locator("#composer-input")).to_be_focused()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Enter")
    person.wait_for_texts(["typed, not clicked"])
    expect(page.locator("#composer-input")).to_have_value("")
    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("#room-title")).to_have_text(f"#{other}")
    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("#room-title")).to_have_text(f"#{room}")
    # Room buttons are real buttons: focusable and pressed with Enter.
    tab_to(page, "join-input", backwards=True)
    page.keyboard.press("Tab")  # the Join button
    page.keyboard.press("Tab")  # the "New private room" box
    expect(page.locator("#join-private")).to_be_focused()
    page.keyboard.press("Tab")  # the first of your rooms
    assert page.evaluate("document.activeElement.dataset.room") == other
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text(f"#{other}")


def tab_to(page: Page, element_id: str, *, backwards: bool = False, presses: int = 20) -> None:
    """Move the focus with Tab (or Shift+Tab) alone until it reaches `element_id`."""
    for _ in range(presses):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    pytest.fail(f"the keyboard never reaches #{element_id}")


def test_a_refused_send_is_marked_failed_with_the_reason_and_can_be_retried(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    server = start_server(env={"CHAT_MESSAGE_RATE_LIMIT": "2 per 3 seconds"})
    person = open_person(server.url)
    person.join(unique("busy"))
    for text in ("one", "two", "three"):
        person.say(text)
    failed = person.page.locator("#messages .message.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".message-text")).to_have_text("three")
    expect(failed.locator(".message-status")).to_contain_text("Not sent: you are sending too fast")
    screenshot(person.page, "send-failed")
    retry = failed.get_by_role("button", name="Retry")

    def retried() -> bool:
        if failed.count() == 1:
            retry.click()
        return [m["text"] for m in person.messages()] == ["one", "two", "three"]

    wait_until(retried, timeout=15, interval=1.0)
    expect(person.page.locator("#messages .message.pending")).to_have_count(0)
    assert [m["id"] for m in person.messages()] == [1, 2, 3]
    server.wait_for_event("message_rejected", user=person.name, reason="rate_limited")


# -- connection trouble -----------------------------------------------------------------------


def test_a_dropped_connection_rejoins_and_catches_up_without_gaps_or_duplicates(
    chat_server: ChatServer, proxy: TcpProxy, open_person: Callable[..., Person]
) -> None:
    room = unique("flaky")
    alice = open_person(proxy.url)  # through the relay the test can cut
    alice.watch.allow(NETWORK_FAILURE)
    alice.join(room)
    bob = socket_user(chat_server, room)
    try:
        for n in range(1, 4):
            assert bob.request("message", {"room": room, "text": f"before {n}"})["ok"]
        alice.wait_for_texts([f"before {n}" for n in range(1, 4)])

        proxy.cut()
        expect(alice.page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        expect(alice.page.locator("#connection-banner")).to_contain_text("Reconnecting")
        chat_server.wait_for_event("room_left", user=alice.name, room=room, reason="disconnect")
        alice.say("written while away")  # held until the room is rejoined
        queued = alice.page.locator("#messages .message.pending")
        expect(queued.locator(".message-status-text")).to_have_text("Waiting for the connection…")
        for n in range(1, 6):
            assert bob.request("message", {"room": room, "text": f"during {n}"})["ok"]
        screenshot(alice.page, "reconnecting")

        requests_before = len(alice.watch.requests)
        proxy.restore()
        expect(alice.page.locator("#connection")).to_have_attribute("data-state", "connected")
        expected = (
            [f"before {n}" for n in range(1, 4)]
            + [f"during {n}" for n in range(1, 6)]
            + ["written while away"]
        )
        shown = alice.wait_for_texts(expected)
        assert [m["id"] for m in shown] == list(range(1, 10))
        # After the rejoin the page asked for what followed the last id it had.
        catch_up = re.compile(rf"/rooms/{room}/messages\?after=\d+")
        assert any(catch_up.search(url) for url in alice.watch.requests[requests_before:])
        expect(alice.page.locator("#messages .message.pending")).to_have_count(0)
        expect(alice.page.locator("#connection-banner")).to_be_hidden()
        # The page rejoined by itself, and the held message went out exactly once.
        assert len(chat_server.logged("room_joined", user=alice.name, room=room)) == 2
        assert len(chat_server.logged("message_sent", user=alice.name, room=room)) == 1
        bob.wait_for("message", lambda m: m["text"] == "written while away")
        screenshot(alice.page, "reconnected")
    finally:
        bob.disconnect()


def test_a_send_whose_ack_is_lost_with_the_connection_is_neither_lost_nor_doubled(
    chat_server: ChatServer, proxy: TcpProxy, open_person: Callable[..., Person]
) -> None:
    room = unique("limbo")
    alice = open_person(proxy.url)
    alice.watch.allow(NETWORK_FAILURE)
    alice.join(room)
    proxy.swallow_replies()  # the message reaches the server; the ack never comes back
    alice.say("did this arrive?")
    chat_server.wait_for_event("message_sent", user=alice.name, room=room)
    pending = alice.page.locator("#messages .message.pending .message-status-text")
    expect(pending).to_have_text("Sending…")
    proxy.cut()
    expect(pending).to_have_text("Waiting for the connection…")
    proxy.restore()
    expect(alice.page.locator("#connection")).to_have_attribute("data-state", "connected")
    # The catch-up shows it arrived: the page keeps that one and does not send it again.
    assert [m["id"] for m in alice.wait_for_texts(["did this arrive?"])] == [1]
    expect(alice.page.locator("#messages .message.pending")).to_have_count(0)
    assert alice.messages()[0]["own"]
    assert len(chat_server.logged("message_sent", user=alice.name, room=room)) == 1


def test_missing_more_than_the_kept_history_is_fetched_with_after_and_marked(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    server = start_server(env={"CHAT_HISTORY_LIMIT": "5"})
    relay = TcpProxy(server.port)
    room = unique("long")
    try:
        alice = open_person(relay.url)
        alice.watch.allow(NETWORK_FAILURE)
        alice.join(room)
        bob = socket_user(server, room)
        for n in range(1, 3):
            assert bob.request("message", {"room": room, "text": f"m{n}"})["ok"]
        alice.wait_for_texts(["m1", "m2"])
        relay.cut()
        expect(alice.page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        for n in range(3, 13):
            assert bob.request("message", {"room": room, "text": f"m{n}"})["ok"]
        relay.restore()
        shown = alice.wait_for_texts(["m1", "m2"] + [f"m{n}" for n in range(8, 13)])
        assert [m["id"] for m in shown] == [1, 2, 8, 9, 10, 11, 12]
        expect(alice.page.locator("#messages .system-note")).to_contain_text(
            ["no longer available"]
        )
        assert any(f"/rooms/{room}/messages?after=2" in url for url in alice.watch.requests)
        bob.disconnect()
    finally:
        relay.close()


def test_a_server_restart_with_the_memory_store_sends_people_back_to_login(
    start_server: Callable[..., ChatServer], open_person: Callable[..., Person]
) -> None:
    # The in-memory store forgets sessions with everything else: the page must notice that
    # its session is gone (the reconnect is refused as unauthorized) and say so.
    server = start_server()
    person = open_person(server.url)
    person.watch.allow(NETWORK_FAILURE)
    person.join(unique("restart"))
    person.say("before the restart")
    person.wait_for_texts(["before the restart"])
    server.restart()
    expect(person.page).to_have_url(server.url + "/login", timeout=20_000)
    expect(person.page.locator("#auth-message")).to_have_text(
        "Your session has ended. Please log in again."
    )


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) for a test."""
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield redis.url()
    finally:
        redis.stop()


@pytest.fixture
def redis_server(redis_url: str) -> Iterator[ChatServer]:
    """A chat server whose store is Redis: users, sessions and message ids outlive it."""
    server = ChatServer(env={"CHAT_STORE": redis_url}).start()
    yield server
    server.stop()
    server.assert_every_line_json()


def test_a_server_restart_with_a_shared_store_rejoins_and_catches_up(
    redis_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    # With Redis the sessions, rooms and message ids outlive the process: the page must
    # reconnect, rejoin by itself and show every message once, in order.
    server = redis_server
    room = unique("durable")
    person = open_person(server.url)
    person.watch.allow(NETWORK_FAILURE)
    person.join(room)
    person.say("before the restart")
    person.wait_for_texts(["before the restart"])
    server.restart()
    bob = socket_user(server, room)
    try:
        for n in range(1, 4):
            assert bob.request("message", {"room": room, "text": f"after {n}"})["ok"]
        expect(person.page.locator("#connection")).to_have_attribute("data-state", "connected")
        shown = person.wait_for_texts(["before the restart", "after 1", "after 2", "after 3"])
        assert [m["id"] for m in shown] == [1, 2, 3, 4]
        server.wait_for_event("room_joined", user=person.name, room=room)
    finally:
        bob.disconnect()


def test_the_page_shows_offline_and_comes_back(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    person = open_person(chat_server.url)
    person.watch.allow(NETWORK_FAILURE)
    room = unique("trip")
    person.join(room)
    person.page.context.set_offline(True)
    expect(person.page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(person.page.locator("#connection-text")).to_have_text("Offline")
    expect(person.page.locator("#connection-banner")).to_contain_text("You are offline")
    person.page.context.set_offline(False)
    expect(person.page.locator("#connection")).to_have_attribute("data-state", "connected")
    person.say("back online")
    person.wait_for_texts(["back online"])


def test_the_room_view_resets_when_the_server_epoch_changes(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    """A restarted store restarts ids at 1: the view must reset, not drop "duplicates".

    A real restart of the memory store also ends every session, so this drives the page's own
    RoomView module, in the page, with the join acks such a restart produces.
    """
    person = open_person(chat_server.url)
    result = person.page.evaluate(
        """async () => {
            const { RoomView } = await import('/static/js/room-view.js');
            const ts = new Date().toISOString();
            const msg = (id, text) => ({ id, room: 'r', user: 'x', text, ts });
            const view = new RoomView('r', 'me');
            const textOf = (item) => item.querySelector('.message-text').textContent;
            const texts = () => [...view.list.querySelectorAll('.message')]
                .map(item => `${item.dataset.id}:${textOf(item)}`);
            const join = (epoch, history) => view.applyJoin({ epoch, members: ['x'], history });
            const first = join('A', [msg(1, 'a'), msg(2, 'b')]);
            const same = join('A', [msg(1, 'a'), msg(2, 'b'), msg(3, 'c')]);
            const afterRejoin = texts();
            view.add([msg(3, 'c'), msg(2, 'b')]);
            const afterDuplicates = texts();
            const other = join('B', [msg(1, 'new')]);
            return {
                first: first.restarted, same: same.restarted, sameAdded: same.added.length,
                afterRejoin, afterDuplicates, other: other.restarted, afterReset: texts(),
                note: view.list.querySelector('.system-note-warning')?.textContent,
            };
        }"""
    )
    assert result == {
        "first": False,
        "same": False,
        "sameAdded": 1,
        "afterRejoin": ["1:a", "2:b", "3:c"],
        "afterDuplicates": ["1:a", "2:b", "3:c"],
        "other": True,
        "afterReset": ["1:new"],
        "note": "The server restarted: earlier history is gone.",
    }


# -- the room list ------------------------------------------------------------------------------


def test_the_room_list_follows_rooms_as_they_fill_and_empty(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("plaza")
    person = open_person(chat_server.url)
    entry = person.page.locator(f'#other-rooms .room-button[data-room="{room}"]')
    expect(entry).to_have_count(0)
    first = socket_user(chat_server, room)
    second = socket_user(chat_server, room)
    expect(entry.locator(".room-members")).to_have_text("2 online")
    first.disconnect()
    expect(entry.locator(".room-members")).to_have_text("1 online")
    second.disconnect()
    expect(entry).to_have_count(0)
    # Joining from the list moves the room to "your rooms".
    third = socket_user(chat_server, room)
    assert third.request("message", {"room": room, "text": "said before you came"})["ok"]
    try:
        entry.click()
        expect(person.page.locator("#room-title")).to_have_text(f"#{room}")
        # What was said before the join arrives with it, and is not counted as unread.
        assert [m["id"] for m in person.wait_for_texts(["said before you came"])] == [1]
        expect(person.page.locator(".room-unread")).to_have_count(0)
        expect(person.page.locator(f'#my-rooms .room-button[data-room="{room}"]')).to_be_visible()
        expect(entry).to_have_count(0)
    finally:
        third.disconnect()


# -- looks: a busy room, a phone, the dark scheme ------------------------------------------------


def fill_a_busy_room(server: ChatServer, person: Person, room: str) -> list[RecordingClient]:
    others = [socket_user(server, room, name) for name in (unique("maria"), unique("kenji"))]
    lines = [
        (others[0], "Morning! Did the deploy go out?"),
        (others[1], "It did, around 7. Dashboards look calm so far."),
        (None, "Nice. Any errors in the logs?"),
        (others[0], "A few 429s from one client hammering /login, the rate limit caught it."),
        (
            others[0],
            'Here is the query I used:\nrate(chat_logins_total{result="rate_limited"}[5m])',
        ),
        (None, "Perfect, thanks. I'll add an alert for that."),
        (others[1], "<b>bold?</b> no, it's just text here :)"),
    ]
    for sender, text in lines:
        if sender is None:
            person.say(text)
            wait_until(lambda t=text: t in [m["text"] for m in person.messages()])
        else:
            assert sender.request("message", {"room": room, "text": text})["ok"]
    person.wait_for_texts([text for _, text in lines])
    others[1].emit("typing", {"room": room})
    expect(person.page.locator("#typing")).to_contain_text("is typing")
    return others


def test_a_busy_room_looks_right_on_desktop_and_in_the_dark(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("team")
    person = open_person(chat_server.url, unique("sam"))
    person.join(unique("random"))
    person.join(room)
    others = fill_a_busy_room(chat_server, person, room)
    try:
        screenshot(person.page, "busy-room")
        assert_readable_contrast(person.page)

        dark = open_person(chat_server.url, color_scheme="dark")
        dark.join(room)
        dark.wait_for_texts([m["text"] for m in person.messages()])
        background = dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert luminance(background) < 0.05, background
        others[0].emit("typing", {"room": room})
        screenshot(dark.page, "busy-room-dark")
        assert_readable_contrast(dark.page)
    finally:
        for client in others:
            client.disconnect()


def test_a_phone_sized_screen_gets_the_whole_chat(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    room = unique("pocket")
    login = open_person(chat_server.url, sign_up=False, viewport=PHONE, device_scale_factor=2)
    login.page.goto(chat_server.url + "/login")
    screenshot(login.page, "phone-login")

    person = open_person(chat_server.url, viewport=PHONE, device_scale_factor=2, has_touch=True)
    page = person.page
    sidebar = page.locator("#sidebar")
    expect(sidebar).not_to_be_in_viewport()
    page.get_by_role("button", name="Rooms", exact=True).click()
    expect(sidebar).to_be_in_viewport()
    person.join(room)  # choosing a room closes the drawer
    expect(sidebar).not_to_be_in_viewport()
    others = fill_a_busy_room(chat_server, person, room)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        expect(page.locator("#composer-input")).to_be_in_viewport()
        expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
        screenshot(page, "phone-room")
        page.get_by_role("button", name="Members", exact=True).click()
        wait_until(lambda: fully_in_view(page, "#members-panel"))  # after the slide-in
        expect(page.locator("#members-panel .member")).to_have_count(3)
        screenshot(page, "phone-members")
        page.keyboard.press("Escape")
        expect(page.locator("#members-panel")).not_to_be_in_viewport()
        page.get_by_role("button", name="Rooms", exact=True).click()
        wait_until(lambda: fully_in_view(page, "#sidebar"))
        screenshot(page, "phone-rooms")
        page.get_by_role("button", name="Close the room list").click()
        expect(sidebar).not_to_be_in_viewport()
        expect(page.get_by_role("button", name="Rooms", exact=True)).to_be_focused()
    finally:
        for client in others:
            client.disconnect()


def drawn(page: Page, selector: str) -> dict[str, str]:
    """What a drawer draws: its computed visibility and box-shadow."""
    return page.eval_on_selector(  # type: ignore[no-any-return]
        selector,
        "e => ({visibility: getComputedStyle(e).visibility,"
        " shadow: getComputedStyle(e).boxShadow})",
    )


def test_closed_drawers_draw_nothing_at_the_screen_edges(
    chat_server: ChatServer, open_person: Callable[..., Person]
) -> None:
    person = open_person(chat_server.url, viewport=PHONE, device_scale_factor=2)
    page = person.page
    person.page.get_by_role("button", name="Rooms", exact=True).click()
    person.join(unique("edges"))
    person.say("no shadows at the edges")
    person.wait_for_texts(["no shadows at the edges"])
    closed = {"visibility": "hidden", "shadow": "none"}
    for drawer in ("#sidebar", "#members-panel"):
        wait_until(lambda d=drawer: drawn(page, d) == closed, timeout=5)
    screenshots_everywhere(page, "drawers-closed")
    page.set_viewport_size(PHONE)
    for toggle, drawer in (("Rooms", "#sidebar"), ("Members", "#members-panel")):
        page.get_by_role("button", name=toggle, exact=True).click()
        wait_until(lambda d=drawer: fully_in_view(page, d))
        opened = drawn(page, drawer)
        assert opened["visibility"] == "visible" and opened["shadow"] != "none", opened
        screenshot(page, f"drawer-open-{drawer[1:]}")
        page.keyboard.press("Escape")
        wait_until(lambda d=drawer: drawn(page, d) == closed, timeout=5)
    # On a desktop the member list is a column, always drawn.
    page.set_viewport_size(DESKTOP)
    expect(page.locator("#members-panel")).to_be_visible()
    expect(page.locator("#sidebar")).to_be_visible()


def fully_in_view(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    viewport = page.viewport_size
    assert viewport is not None
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= viewport["width"] + 0.5
        and box["y"] + box["height"] <= viewport["height"] + 0.5
    )


# -- what the server sends the browser ----------------------------------------------------------


INLINE_CODE = [
    (re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"\sstyle\s*=", re.I), "a style= attribute"),
    (re.compile(r"<style\b", re.I), "a <style> element"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on*= handler"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"(src|href)=\"(?![/#])", re.I), "a resource from elsewhere"),
]


def test_pages_carry_a_strict_csp_and_no_inline_code(chat_server: ChatServer) -> None:
    session = chat_server.login(unique("csp"))
    pages = [requests.get(chat_server.url + "/login", timeout=10), session.get(chat_server.url)]
    for reply in pages:
        assert reply.status_code == 200
        policy = reply.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self'" in policy and "unsafe" not in policy
        for pattern, what in INLINE_CODE:
            assert not pattern.search(reply.text), f"{reply.url} has {what}"
    assert 'role="log"' in pages[1].text


def test_scripts_never_write_markup_and_the_client_is_vendored() -> None:
    for script in (REPO / "static" / "js").glob("*.js"):
        source = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"
    vendored = (REPO / "static" / "vendor" / "socket.io.min.js").read_text(encoding="utf-8")
    version = re.search(r"Socket\.IO v(\d+)\.(\d+)\.(\d+)", vendored)
    assert version is not None and version.group(1) == "4"  # protocol v5, python-socketio 5.x
    readme = (REPO / "static" / "vendor" / "README.md").read_text(encoding="utf-8")
    assert f"socket.io-client {'.'.join(version.groups())}" in readme


# -- contrast -----------------------------------------------------------------------------------


def luminance(css_color: str) -> float:
    """WCAG relative luminance of an `rgb(...)`/`rgba(...)` computed colour."""
    channels = [float(v) for v in re.findall(r"[\d.]+", css_color)[:3]]
    linear = [
        c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4
        for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def assert_readable_contrast(page: Page) -> None:
    """Text against what is really behind it meets WCAG AA (4.5:1) for the main kinds of text."""
    pairs = page.evaluate(
        """() => {
            const background = (element) => {
                for (let node = element; node; node = node.parentElement) {
                    const color = getComputedStyle(node).backgroundColor;
                    if (color && !color.endsWith(', 0)') && color !== 'transparent') return color;
                }
                return getComputedStyle(document.documentElement).backgroundColor;
            };
            const selectors = [
                '.message:not(.own) .message-text', '.message.own .message-text',
                '.message:not(.own) .message-time', '.message.own .message-time',
                '.message-author', '.room-subtitle', '.section-title', '.room-name',
                '.room-members', '#connection-text', 'button.primary', '#typing', '.composer-hint',
                '.account-name', '.member-name',
            ];
            return selectors.flatMap((selector) =>
                [...document.querySelectorAll(selector)].slice(0, 2)
                    .filter((element) => element.getClientRects().length > 0)
                    .map((element) => [
                        selector, getComputedStyle(element).color, background(element),
                    ]));
        }"""
    )
    assert len(pairs) >= 10, pairs
    weak = [
        (selector, fg, bg, round(contrast(fg, bg), 2))
        for selector, fg, bg in pairs
        if contrast(fg, bg) < 4.5
    ]
    assert weak == [], weak
