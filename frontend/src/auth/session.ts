// The signed-in session: OIDC authorization code + PKCE against the configured issuer, the
// tokens kept in memory only (never Web Storage, never a URL), renewed with the refresh
// token 60 s before the access token expires (the issuer rotates refresh tokens: the new one
// always replaces the old), and signed out by dropping them. Only the short-lived login
// request (PKCE verifier, state, nonce, the path to return to) crosses the redirect, in
// sessionStorage, and is removed when the callback is handled.
import type { AppConfig } from "../config";
import {
  authorizeUrl,
  codeChallenge,
  decodeJwtPayload,
  parseCallback,
  randomString,
  renewalDelay,
  safeReturnPath,
} from "./pkce";

export interface User {
  subject: string;
  name: string;
  email?: string;
  tenant: string;
  scopes: string[];
}

export type AuthStatus =
  | { kind: "loading" }
  | { kind: "signed-in"; user: User }
  /** No tokens: after sign-out or before the first sign-in. */
  | { kind: "signed-out"; explicit: boolean }
  /** The session ended on its own (renewal refused, token rejected). */
  | { kind: "expired"; reason: string }
  /** Sign-in failed (bad callback, issuer error). */
  | { kind: "error"; message: string };

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
  userinfo_endpoint?: string;
  end_session_endpoint?: string;
}

interface Tokens {
  access: string;
  refresh?: string;
  idToken?: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

interface PendingLogin {
  verifier: string;
  state: string;
  nonce: string;
  returnTo: string;
  created: number;
}

const PENDING_PREFIX = "flnet.oidc.pending.";
const PENDING_TTL_MS = 15 * 60 * 1000;

export class OAuthError extends Error {
  constructor(
    readonly error: string,
    description: string,
  ) {
    super(description ? `${error}: ${description}` : error);
    this.name = "OAuthError";
  }
}

export class AuthSession {
  private discoveryPromise?: Promise<Discovery>;
  private tokens?: Tokens;
  private renewTimer?: ReturnType<typeof setTimeout>;
  private refreshing?: Promise<void>;
  private listeners = new Set<() => void>();
  status: AuthStatus = { kind: "loading" };

  constructor(
    readonly config: AppConfig,
    private readonly origin = window.location.origin,
  ) {
    document.addEventListener("visibilitychange", () => {
      // Timers are throttled in background tabs: catch up when the tab is shown again.
      if (document.visibilityState === "visible" && this.tokens && this.needsRenewal(60_000)) {
        void this.refresh().catch(() => undefined);
      }
    });
  }

  get redirectUri(): string {
    return `${this.origin}/callback`;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getStatus = (): AuthStatus => this.status;

  private set(status: AuthStatus): void {
    this.status = status;
    for (const l of [...this.listeners]) l();
  }

  discovery(): Promise<Discovery> {
    this.discoveryPromise ??= (async () => {
      const res = await fetch(`${this.config.issuer}/.well-known/openid-configuration`, {
        credentials: "omit",
        cache: "no-store",
      });
      if (!res.ok) throw new Error(`the issuer's discovery document returned HTTP ${res.status}`);
      const d = (await res.json()) as Discovery;
      if (!d.authorization_endpoint || !d.token_endpoint) throw new Error("the issuer's discovery document is incomplete");
      return d;
    })();
    this.discoveryPromise.catch(() => (this.discoveryPromise = undefined));
    return this.discoveryPromise;
  }

  /** Starts sign-in: redirects to the issuer, which returns to /callback. */
  async login(returnTo: string): Promise<void> {
    const d = await this.discovery();
    const pending: PendingLogin = {
      verifier: randomString(48),
      state: randomString(24),
      nonce: randomString(24),
      returnTo: safeReturnPath(returnTo),
      created: Date.now(),
    };
    this.prunePending();
    sessionStorage.setItem(PENDING_PREFIX + pending.state, JSON.stringify(pending));
    window.location.assign(
      authorizeUrl({
        authorizationEndpoint: d.authorization_endpoint,
        clientId: this.config.clientId,
        redirectUri: this.redirectUri,
        scope: this.config.scopes,
        state: pending.state,
        nonce: pending.nonce,
        challenge: codeChallenge(pending.verifier),
      }),
    );
  }

  private prunePending(): void {
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const key = sessionStorage.key(i);
      if (!key?.startsWith(PENDING_PREFIX)) continue;
      try {
        const p = JSON.parse(sessionStorage.getItem(key) ?? "{}") as Partial<PendingLogin>;
        if (!p.created || Date.now() - p.created > PENDING_TTL_MS) sessionStorage.removeItem(key);
      } catch {
        sessionStorage.removeItem(key);
      }
    }
  }

  /** Handles /callback?code&state: exchanges the code and returns the path to go back to.
   * The caller replaces the URL (history.replaceState) so the code leaves the address bar. */
  async completeLogin(search: string): Promise<string> {
    const params = parseCallback(search);
    if (params.kind === "none") throw new OAuthError("invalid_request", "the sign-in response has no code");
    const key = PENDING_PREFIX + params.state;
    const raw = params.state ? sessionStorage.getItem(key) : null;
    if (raw) sessionStorage.removeItem(key);
    if (params.kind === "error") throw new OAuthError(params.error, params.description);
    if (!raw) throw new OAuthError("invalid_state", "this sign-in response does not belong to a sign-in started here");
    const pending = JSON.parse(raw) as PendingLogin;
    if (Date.now() - pending.created > PENDING_TTL_MS) throw new OAuthError("expired", "the sign-in took too long; sign in again");
    const tokens = await this.tokenRequest({
      grant_type: "authorization_code",
      code: params.code,
      redirect_uri: this.redirectUri,
      client_id: this.config.clientId,
      code_verifier: pending.verifier,
    });
    if (tokens.idToken) {
      const claims = decodeJwtPayload(tokens.idToken);
      if (claims && claims["nonce"] !== undefined && claims["nonce"] !== pending.nonce) {
        throw new OAuthError("invalid_nonce", "the ID token does not answer this sign-in");
      }
    }
    this.accept(tokens);
    return pending.returnTo;
  }

  private async tokenRequest(form: Record<string, string>): Promise<Tokens> {
    const d = await this.discovery();
    const res = await fetch(d.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body: new URLSearchParams(form).toString(),
      credentials: "omit",
      cache: "no-store",
    });
    let body: Record<string, unknown> = {};
    try {
      body = (await res.json()) as Record<string, unknown>;
    } catch {
      // handled below
    }
    if (!res.ok || typeof body["access_token"] !== "string") {
      throw new OAuthError(
        typeof body["error"] === "string" ? body["error"] : `http_${res.status}`,
        typeof body["error_description"] === "string" ? body["error_description"] : "",
      );
    }
    const expiresIn = typeof body["expires_in"] === "number" ? body["expires_in"] : 300;
    const tokens: Tokens = { access: body["access_token"], expiresAt: Date.now() + expiresIn * 1000 };
    if (typeof body["refresh_token"] === "string") tokens.refresh = body["refresh_token"];
    if (typeof body["id_token"] === "string") tokens.idToken = body["id_token"];
    return tokens;
  }

  private accept(tokens: Tokens): void {
    // A refresh response without a new refresh token keeps the old one.
    const previous = this.tokens;
    if (!tokens.refresh && previous?.refresh) tokens.refresh = previous.refresh;
    if (!tokens.idToken && previous?.idToken) tokens.idToken = previous.idToken;
    this.tokens = tokens;
    this.schedule();
    this.set({ kind: "signed-in", user: this.userOf(tokens) });
  }

  private userOf(tokens: Tokens): User {
    const access = decodeJwtPayload(tokens.access) ?? {};
    const id = tokens.idToken ? (decodeJwtPayload(tokens.idToken) ?? {}) : {};
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    const subject = str(access["sub"]) ?? str(id["sub"]) ?? "";
    const scope = str(access["scope"]) ?? (Array.isArray(access["scp"]) ? (access["scp"] as string[]).join(" ") : "");
    const user: User = {
      subject,
      name: str(id["name"]) ?? str(access["name"]) ?? str(id["preferred_username"]) ?? subject,
      tenant: str(access["tenant"]) ?? "",
      scopes: scope.split(/\s+/).filter(Boolean),
    };
    const email = str(id["email"]) ?? str(access["email"]);
    if (email) user.email = email;
    return user;
  }

  private needsRenewal(marginMs: number): boolean {
    return !!this.tokens && this.tokens.expiresAt - Date.now() < marginMs;
  }

  private schedule(): void {
    clearTimeout(this.renewTimer);
    if (!this.tokens) return;
    const expiresIn = Math.max(0, (this.tokens.expiresAt - Date.now()) / 1000);
    this.renewTimer = setTimeout(() => {
      void this.refresh().catch(() => undefined);
    }, renewalDelay(expiresIn));
  }

  /** Renews the access token with the refresh token (one request at a time: the issuer
   * rotates refresh tokens and treats a reused one as theft). */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      const current = this.tokens;
      if (!current?.refresh) {
        if (current && Date.now() < current.expiresAt) return;
        this.expire("your session has expired");
        throw new OAuthError("no_refresh_token", "the session cannot be renewed");
      }
      try {
        const tokens = await this.tokenRequest({
          grant_type: "refresh_token",
          refresh_token: current.refresh,
          client_id: this.config.clientId,
        });
        if (this.tokens === current) this.accept(tokens);
      } catch (e) {
        if (this.tokens !== current) return; // signed out meanwhile
        if (e instanceof OAuthError && !e.error.startsWith("http_5")) {
          this.expire("your session could not be renewed");
        } else if (Date.now() < current.expiresAt - 5000) {
          // The issuer is unreachable: try again shortly while the token still works.
          clearTimeout(this.renewTimer);
          this.renewTimer = setTimeout(() => void this.refresh().catch(() => undefined), 10_000);
        } else {
          this.expire("your session has expired");
        }
        throw e;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The current access token, renewed first when it is about to expire. */
  async accessToken(): Promise<string> {
    if (this.tokens && this.needsRenewal(10_000) && this.tokens.refresh) {
      await this.refresh().catch(() => undefined);
    }
    if (!this.tokens) throw new OAuthError("signed_out", "not signed in");
    return this.tokens.access;
  }

  /** The server refused the token: the session is over; the user signs in again. */
  expire(reason: string): void {
    this.drop();
    this.set({ kind: "expired", reason });
  }

  signOut(): void {
    this.drop();
    this.set({ kind: "signed-out", explicit: true });
  }

  /** No tokens at start (after a reload the user signs in again). */
  setSignedOut(): void {
    this.set({ kind: "signed-out", explicit: false });
  }

  fail(message: string): void {
    this.drop();
    this.set({ kind: "error", message });
  }

  private drop(): void {
    clearTimeout(this.renewTimer);
    this.tokens = undefined;
  }

  /** Seconds until the access token expires (for tests and the user menu). */
  expiresIn(): number {
    return this.tokens ? Math.round((this.tokens.expiresAt - Date.now()) / 1000) : 0;
  }
}
