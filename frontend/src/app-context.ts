// Process-wide singletons set once at start: the auth session (tokens in memory).
import { useSyncExternalStore } from "react";
import type { AuthSession, AuthStatus, User } from "./auth/session";

let current: AuthSession | undefined;

export function setSession(s: AuthSession): void {
  current = s;
}

export function session(): AuthSession {
  if (!current) throw new Error("no session");
  return current;
}

export function useAuthStatus(): AuthStatus {
  const s = session();
  return useSyncExternalStore(s.subscribe, s.getStatus);
}

export function useUser(): User | undefined {
  const status = useAuthStatus();
  return status.kind === "signed-in" ? status.user : undefined;
}
