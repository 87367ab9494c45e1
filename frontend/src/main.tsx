// Start-up: read /config.json, finish a sign-in when this is the /callback of one (then
// remove code and state from the URL), otherwise ask the user to sign in (tokens live in
// memory only, so every page load starts signed out).
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { setSession } from "./app-context";
import { initApi } from "./api/client";
import { AuthSession } from "./auth/session";
import { loadConfig } from "./config";
import "./styles.css";

async function start(): Promise<void> {
  const config = await loadConfig();
  const auth = new AuthSession(config);
  setSession(auth);
  initApi(auth);
  createRoot(document.getElementById("root")!).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
  if (window.location.pathname === "/callback") {
    const search = window.location.search;
    // The code is single-use: take it out of the address bar and history right away.
    window.history.replaceState(null, "", "/callback");
    try {
      const returnTo = await auth.completeLogin(search);
      window.history.replaceState(null, "", returnTo);
      window.dispatchEvent(new PopStateEvent("popstate"));
    } catch (e) {
      auth.fail(e instanceof Error ? e.message : String(e));
      window.history.replaceState(null, "", "/signed-out");
      window.dispatchEvent(new PopStateEvent("popstate"));
    }
    return;
  }
  auth.setSignedOut();
}

void start();
