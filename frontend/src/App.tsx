// Layout (skip link, header with the main navigation and the user, main), the sign-in gate
// and the routes. URLs carry the API's resource ids: /runs/{run}, /tools/{tool}, ...
import { useEffect, useRef, type ReactElement } from "react";
import { session, useAuthStatus, useUser } from "./app-context";
import { NotFoundView } from "./components/common";
import { DevSessionPage, DevSessionsPage } from "./pages/DevSessions";
import { NewRunPage } from "./pages/NewRun";
import { RunPage } from "./pages/Run";
import { RunsPage } from "./pages/Runs";
import { ExpiredPage, RedirectingPage, SignInErrorPage, SignedOutPage } from "./pages/SignIn";
import { ToolPage, ToolsPage } from "./pages/Tools";
import { Link, matchPath, navigate, useLocation } from "./router";

interface Route {
  pattern: string;
  render: (p: Record<string, string>) => ReactElement;
}

const ROUTES: Route[] = [
  { pattern: "/runs", render: () => <RunsPage /> },
  { pattern: "/runs/new", render: () => <NewRunPage /> },
  { pattern: "/runs/:run", render: (p) => <RunPage key={p["run"]} runId={p["run"]!} /> },
  { pattern: "/tools", render: () => <ToolsPage /> },
  { pattern: "/tools/:tool", render: (p) => <ToolPage key={p["tool"]} toolId={p["tool"]!} /> },
  {
    pattern: "/tools/:tool/versions/:version",
    render: (p) => <ToolPage key={`${p["tool"]}@${p["version"]}`} toolId={p["tool"]!} versionId={p["version"]!} />,
  },
  { pattern: "/dev-sessions", render: () => <DevSessionsPage /> },
  { pattern: "/dev-sessions/:run", render: (p) => <DevSessionPage key={p["run"]} runId={p["run"]!} /> },
  // Full resource names in the URL lead to the same pages.
  { pattern: "/tenants/:tenant/runs/:run", render: (p) => <Alias tenant={p["tenant"]!} to={`/runs/${encodeURIComponent(p["run"]!)}`} /> },
  { pattern: "/tenants/:tenant/tools/:tool", render: (p) => <Alias tenant={p["tenant"]!} to={`/tools/${encodeURIComponent(p["tool"]!)}`} /> },
  {
    pattern: "/tenants/:tenant/tools/:tool/versions/:version",
    render: (p) => <Alias tenant={p["tenant"]!} to={`/tools/${encodeURIComponent(p["tool"]!)}/versions/${encodeURIComponent(p["version"]!)}`} />,
  },
];

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

/** /tenants/{tenant}/runs/{run} → /runs/{run} for the signed-in tenant; another tenant's
 * resource is not found (as the API says). */
function Alias({ tenant, to }: { tenant: string; to: string }) {
  const user = useUser();
  const mine = user?.tenant === tenant;
  useEffect(() => {
    if (mine) navigate(to, { replace: true });
  }, [mine, to]);
  return mine ? null : <NotFoundView title="Not found" message={`There is no such resource in your tenant.`} />;
}

const NAV: [string, string][] = [
  ["/runs", "Runs"],
  ["/runs/new", "Submit a run"],
  ["/tools", "Tools"],
  ["/dev-sessions", "Dev sessions"],
];

function currentNav(pathname: string): string | undefined {
  if (pathname === "/runs/new") return "/runs/new";
  return NAV.map(([p]) => p).find((p) => p !== "/runs/new" && (pathname === p || pathname.startsWith(`${p}/`)));
}

function Header() {
  const user = useUser();
  const { pathname } = useLocation();
  const active = currentNav(pathname);
  return (
    <header className="app-header">
      <div className="header-inner">
        <Link to="/runs" className="brand">
          FLNet
        </Link>
        {user && (
          <nav aria-label="Main" className="main-nav">
            <ul>
              {NAV.map(([to, label]) => (
                <li key={to}>
                  <Link to={to} aria-current={active === to ? "page" : undefined}>
                    {label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
        )}
        {user && (
          <div className="user" aria-label="Signed-in user" role="group">
            <span className="user-name">{user.name}</span>
            {user.subject && user.subject !== user.name && <span className="user-subject">({user.subject})</span>}
            <span className="user-tenant">
              tenant <strong>{user.tenant || "—"}</strong>
            </span>
            <button type="button" className="secondary small" onClick={() => signOut()}>
              Sign out
            </button>
          </div>
        )}
      </div>
    </header>
  );
}

function signOut(): void {
  session().signOut();
  navigate("/signed-out", { replace: true });
}

function Routes() {
  const { pathname } = useLocation();
  if (pathname === "/callback") return null; // main.tsx replaces it with the return path
  if (pathname === "/" || pathname === "/signed-out") return <Redirect to="/runs" />;
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  for (const r of ROUTES) {
    const params = matchPath(r.pattern, path);
    if (params) return r.render(params);
  }
  return <NotFoundView title="Page not found" message={`There is no page at ${pathname}.`} />;
}

/** Moves focus to the new page's heading after in-app navigation (not on first load). */
function useFocusOnNavigate(): void {
  const { pathname } = useLocation();
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    // A page may swap its heading when its data arrives (loading → loaded): focus it again
    // while focus has not gone anywhere else.
    const focusHeading = (force: boolean) => {
      const active = document.activeElement;
      if (!force && active && active !== document.body && active.tagName !== "H1") return;
      const h = document.querySelector<HTMLElement>("main h1");
      if (h && h !== active) h.focus({ preventScroll: true });
    };
    const timers = [0, 250, 800, 2000].map((ms, i) => setTimeout(() => focusHeading(i === 0), ms));
    return () => timers.forEach(clearTimeout);
  }, [pathname]);
}

function Shell({ children }: { children: ReactElement | null }) {
  useFocusOnNavigate();
  return (
    <>
      <a href="#main" className="skip-link">
        Skip to main content
      </a>
      <Header />
      <main id="main" tabIndex={-1}>
        {children}
      </main>
      <footer className="app-footer">
        <p>FLNet · reproducible, governed scientific tools</p>
      </footer>
    </>
  );
}

export function App() {
  const status = useAuthStatus();
  const { pathname, href } = useLocation();
  switch (status.kind) {
    case "loading":
      return (
        <Shell>
          <section className="page">
            <h1 tabIndex={-1}>Signing in…</h1>
            <p role="status">Checking your session.</p>
          </section>
        </Shell>
      );
    case "error":
      return (
        <Shell>
          <SignInErrorPage message={status.message} />
        </Shell>
      );
    case "expired":
      return (
        <Shell>
          <ExpiredPage reason={status.reason} returnTo={href} />
        </Shell>
      );
    case "signed-out":
      if (pathname === "/signed-out" || status.explicit) {
        return (
          <Shell>
            <SignedOutPage />
          </Shell>
        );
      }
      return (
        <Shell>
          <RedirectingPage returnTo={href} />
        </Shell>
      );
    case "signed-in":
      return (
        <Shell>
          <Routes />
        </Shell>
      );
  }
}
