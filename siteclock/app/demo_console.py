"""The demo's employer: the console over HTTPS, as a person in a browser would use it.

:class:`ConsoleClient` logs in with the demo account, reads pages and their JSON twins, and
posts forms with the session's CSRF token. Every page and export it receives is saved under
``demo-site/console/`` so a reader (and the INSS scan in tests/integration/test_demo.py) can
see exactly what the console served.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import requests

from siteclock.gateway.console.accounts import Accounts, Role
from siteclock.gateway.db import SQLiteGatewayDB

DEMO_USER = "demo"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def create_demo_login(db_path: Path) -> str:
    """An administrator ``demo`` with a fresh password, returned to be printed."""
    password = "-".join(secrets.token_hex(3) for _ in range(3))
    db = SQLiteGatewayDB(db_path)
    try:
        Accounts(db).add(DEMO_USER, password, role=Role.ADMIN, language="en")
    finally:
        db.close()
    return password


class ConsoleClient:
    """A logged-in console session (HTTPS, checked against the site's CA)."""

    def __init__(self, url: str, ca_file: Path, save_dir: Path) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # the site's CA, never a bundle named by the environment (REQUESTS_CA_BUNDLE would
        # override it), and no proxy between the demo and its own console
        self.session.trust_env = False
        self.session.verify = str(ca_file)
        self.save_dir = save_dir
        save_dir.mkdir(parents=True, exist_ok=True)
        self._saved = 0

    def _keep(self, path: str, answer: requests.Response) -> None:
        self._saved += 1
        kind = "json" if "json" in answer.headers.get("Content-Type", "") else "html"
        if "csv" in answer.headers.get("Content-Type", ""):
            kind = "csv"
        slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:60] or "home"
        (self.save_dir / f"{self._saved:02d}-{slug}.{kind}").write_bytes(answer.content)

    def log_in(self, username: str, password: str) -> None:
        form = self.session.get(f"{self.url}/login", timeout=10)
        token = CSRF_RE.search(form.text)
        answer = self.session.post(
            f"{self.url}/login", timeout=10, allow_redirects=False,
            data={"username": username, "password": password,
                  "csrf_token": token.group(1) if token else ""},
        )  # fmt: skip
        if answer.status_code != 302:
            raise RuntimeError(f"the console refused the demo login ({answer.status_code})")

    def get(self, path: str, *, keep: bool = True, **params: Any) -> requests.Response:
        answer = self.session.get(f"{self.url}{path}", params=params, timeout=30)
        answer.raise_for_status()
        if keep:
            self._keep(path, answer)
        return answer

    def json(self, path: str, **params: Any) -> Any:
        return self.get(path, keep=False, **params).json()

    def post(self, page: str, action: str, form: dict[str, str]) -> requests.Response:
        """Submit a form of ``page`` (read for its CSRF token) to ``action``."""
        token = CSRF_RE.search(self.get(page, keep=False).text)
        data = {**form, "csrf_token": token.group(1) if token else ""}
        answer = self.session.post(f"{self.url}{action}", data=data, timeout=30)
        answer.raise_for_status()
        self._keep(action, answer)
        return answer


# --------------------------------------------------------------------------- the story's parts


def show_rejection(client: ConsoleClient, say) -> None:  # type: ignore[no-untyped-def]
    """The rejected tap as the employer sees it: worker (INSS masked), remarks, problem."""
    client.get("/registrations/", state="rejected")
    rows = client.json("/api/registrations", state="rejected")["registrations"]
    for row in rows:
        remarks = "; ".join(str(r.get("code", r) if isinstance(r, dict) else r)
                            for r in row["remarks"])  # fmt: skip
        say(f"  rejected: {row['worker_name']} ({row['inss']}), {row['terminal']} #{row['seq']}"
            f", NSSO id {row['nsso_id']}: {remarks}")  # fmt: skip
        client.get(f"/registrations/{row['terminal']}/{row['seq']}")


def link_unknown_badge(client: ConsoleClient, badge: str, worker: str, say) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """Link the unknown badge's waiting tap to ``worker`` on its registration page."""
    rows = client.json("/api/registrations", state="unknown_badge")["registrations"]
    row = next(r for r in rows if r["badge"] == badge)
    page = f"/registrations/{row['terminal']}/{row['seq']}"
    client.post(page, f"{page}/link", {"worker": worker})
    say(f"  the unknown badge {badge} (tap {row['terminal']} #{row['seq']}) is linked to "
        f"{worker} on its registration page: its tap goes to the NSSO now")  # fmt: skip
    return row["terminal"], row["seq"]


def registration_state(client: ConsoleClient, terminal: str, seq: int) -> str:
    return str(client.json(f"/api/registrations/{terminal}/{seq}")["state"])


def terminal_state(client: ConsoleClient, terminal: str) -> str:
    for row in client.json("/api/terminals", q=terminal)["terminals"]:
        if row["terminal"] == terminal:
            return str(row["state"])
    return "missing"


def roll_call(client: ConsoleClient, workplace: str, say) -> list[str]:  # type: ignore[no-untyped-def]
    client.get("/rollcall/", worksite=workplace)
    present = client.json("/api/rollcall", worksite=workplace)["present"]
    say(f"  on site now ({len(present)}): " + ", ".join(
        f"{p['name']} ({p['inss']})" for p in present))  # fmt: skip
    return [p["name"] for p in present]
