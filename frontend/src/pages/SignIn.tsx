// Pages around sign-in: redirecting to the issuer, signed out, session expired, failure.
import { useEffect, useState } from "react";
import { session } from "../app-context";
import { useDocumentTitle } from "../lib/useAsync";

function useLogin(returnTo: string) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const start = () => {
    setBusy(true);
    setError(null);
    session()
      .login(returnTo)
      .catch((e: unknown) => {
        setBusy(false);
        setError(e instanceof Error ? e.message : String(e));
      });
  };
  return { start, error, busy };
}

function SignInButton({ label, returnTo }: { label: string; returnTo: string }) {
  const { start, error, busy } = useLogin(returnTo);
  return (
    <>
      <button type="button" onClick={start} disabled={busy}>
        {label}
      </button>
      {error && (
        <p role="alert" className="problem">
          Cannot reach the sign-in service: {error}
        </p>
      )}
    </>
  );
}

export function SignedOutPage() {
  useDocumentTitle("Signed out");
  return (
    <section className="page narrow-page">
      <h1 tabIndex={-1}>You are signed out</h1>
      <p>Your tokens were discarded. Sign in to use FLNet again.</p>
      <SignInButton label="Sign in" returnTo="/runs" />
    </section>
  );
}

/** First visit (or a reload: tokens live in memory only): go to the issuer at once, and come
 * back to this page afterwards. */
export function RedirectingPage({ returnTo }: { returnTo: string }) {
  useDocumentTitle("Signing in");
  const { start, error, busy } = useLogin(returnTo);
  useEffect(() => {
    start();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <section className="page narrow-page">
      <h1 tabIndex={-1}>Sign in to FLNet</h1>
      {busy && !error && <p role="status">Redirecting to the sign-in page…</p>}
      {error && (
        <>
          <p role="alert" className="problem">
            Cannot reach the sign-in service: {error}
          </p>
          <button type="button" onClick={start}>
            Sign in
          </button>
        </>
      )}
    </section>
  );
}

export function ExpiredPage({ reason, returnTo }: { reason: string; returnTo: string }) {
  useDocumentTitle("Session expired");
  return (
    <section className="page narrow-page">
      <h1 tabIndex={-1}>Your session has expired</h1>
      <p>
        {reason.charAt(0).toUpperCase() + reason.slice(1)}. Sign in again to continue; you will come back to this page.
      </p>
      <SignInButton label="Sign in again" returnTo={returnTo} />
    </section>
  );
}

export function SignInErrorPage({ message }: { message: string }) {
  useDocumentTitle("Sign-in failed");
  return (
    <section className="page narrow-page">
      <h1 tabIndex={-1}>Sign-in failed</h1>
      <p role="alert" className="problem">
        {message}
      </p>
      <SignInButton label="Sign in" returnTo="/runs" />
    </section>
  );
}
