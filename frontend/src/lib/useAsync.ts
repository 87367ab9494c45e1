// Loading / error / data state of an asynchronous read, cancelled when its inputs change or
// the component unmounts.
import { useCallback, useEffect, useRef, useState } from "react";

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  /** Replaces the data (e.g. with what a watch stream reported). */
  setData: (update: T | ((old: T | undefined) => T)) => void;
}

export function useAsync<T>(fn: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[]): AsyncState<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [nonce, setNonce] = useState(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    setError(undefined);
    fnRef.current(ctl.signal).then(
      (d) => {
        if (ctl.signal.aborted) return;
        setDataState(() => d);
        setLoading(false);
      },
      (e: unknown) => {
        if (ctl.signal.aborted) return;
        setError(e);
        setLoading(false);
      },
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, nonce]);
  const reload = useCallback(() => setNonce((n) => n + 1), []);
  const setData = useCallback((update: T | ((old: T | undefined) => T)) => {
    setDataState((old) => (typeof update === "function" ? (update as (o: T | undefined) => T)(old) : update));
  }, []);
  return { data, error, loading, reload, setData };
}

/** Calls fn when the window regains focus (a modest refresh; no polling loop). */
export function useOnFocus(fn: () => void): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    let last = Date.now();
    const handler = () => {
      if (document.visibilityState !== "visible" || Date.now() - last < 5000) return;
      last = Date.now();
      ref.current();
    };
    window.addEventListener("focus", handler);
    document.addEventListener("visibilitychange", handler);
    return () => {
      window.removeEventListener("focus", handler);
      document.removeEventListener("visibilitychange", handler);
    };
  }, []);
}

export function useDocumentTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · FLNet` : "FLNet";
  }, [title]);
}
