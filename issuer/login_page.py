"""The issuer's HTML: a minimal login form and an error page. No scripts; every value is
escaped. The form carries one hidden field, `csrf_token`: the single-use nonce under which the
issuer keeps the validated authorization request."""

from __future__ import annotations

from html import escape

# No scripts, no framing (clickjacking), no referrer leaking the query string, no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f5f7; margin: 0; }
main { max-width: 22rem; margin: 10vh auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }
h1 { font-size: 1.3rem; margin-top: 0; }
label { display: block; margin-top: 1rem; font-size: .9rem; }
input[type=text], input[type=password] { width: 100%; box-sizing: border-box; padding: .5rem; }
button { margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; }
.error { color: #b00020; }
.scopes { color: #555; font-size: .85rem; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body><main>{body}</main></body></html>\n"
    )


def login_form(
    action: str,
    csrf_token: str,
    client_id: str,
    scopes: tuple[str, ...],
    *,
    username: str = "",
    error: str | None = None,
) -> str:
    """The login form, posting `username`, `password` and `csrf_token` to `action`."""
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return _page(
        "FLNet sign in",
        f"<h1>Sign in to FLNet</h1>"
        f"<p>{escape(client_id)} asks for access.</p>"
        f'<p class="scopes">Scopes: {escape(" ".join(scopes)) or "(none)"}</p>'
        f"{message}"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
        '<label for="username">User name</label>'
        f'<input type="text" id="username" name="username" value="{escape(username)}" '
        'autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button>'
        "</form>",
    )


def error_page(message: str) -> str:
    return _page("FLNet sign in", f'<h1>Cannot sign in</h1><p class="error">{escape(message)}</p>')
