// Small shared views: loading, empty and error states, state badges, progress, dialogs, tables.
import { Code } from "@connectrpc/connect";
import { useEffect, useId, useRef, type ReactNode } from "react";
import { session } from "../app-context";
import { toProblem, type Problem } from "../api/errors";
import { RunState } from "../gen/flnet/api/common/v1/lifecycle_pb";
import { stateName } from "../lib/format";
import { Link } from "../router";

export function Loading({ label }: { label: string }) {
  return (
    <p className="loading" role="status">
      <span className="spinner" aria-hidden="true" />
      {label}
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** An API error as a person reads it: permission, not found, session ended, or the
 * server's message with its code; "Try again" when the read can be repeated. */
export function ProblemView({ error, what, onRetry }: { error: unknown; what: string; onRetry?: () => void }) {
  const p = toProblem(error);
  useEffect(() => {
    if (p.code === Code.Unauthenticated) session().expire("the server did not accept your credentials");
  }, [p.code]);
  return (
    <div className="problem" role="alert">
      <p className="problem-title">{problemTitle(p, what)}</p>
      {p.code !== Code.PermissionDenied && p.code !== Code.NotFound && p.code !== Code.Unauthenticated && (
        <p className="problem-detail">
          {p.codeName && <code>{p.codeName}</code>} {p.message}
          {p.reason && <> (reason <code>{p.reason}</code>)</>}
        </p>
      )}
      {p.code === Code.PermissionDenied && <p className="problem-detail">{p.message}</p>}
      {p.violations.length > 0 && (
        <ul>
          {p.violations.map((v, i) => (
            <li key={i}>
              <code>{v.field}</code>: {v.description}
            </li>
          ))}
        </ul>
      )}
      {onRetry && p.code !== Code.PermissionDenied && p.code !== Code.NotFound && (
        <button type="button" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function problemTitle(p: Problem, what: string): string {
  switch (p.code) {
    case Code.PermissionDenied:
      return `You don't have permission to ${what}.`;
    case Code.NotFound:
      return `Not found: could not ${what}.`;
    case Code.Unauthenticated:
      return "Your session has ended. Sign in again.";
    case Code.Unavailable:
      return `The service is unavailable; could not ${what}.`;
    default:
      return `Could not ${what}.`;
  }
}

/** Page shown when the resource of a route does not exist (or belongs to another tenant). */
export function NotFoundView({ title, message }: { title?: string; message?: string }) {
  return (
    <section aria-labelledby="notfound-title" className="page">
      <h1 id="notfound-title" tabIndex={-1}>
        {title ?? "Not found"}
      </h1>
      <p>{message ?? "This page does not exist."}</p>
      <p>
        <Link to="/runs">Go to runs</Link> · <Link to="/tools">Go to tools</Link>
      </p>
    </section>
  );
}

export function StateBadge({ state }: { state: RunState }) {
  const name = stateName(state);
  return <span className={`state state-${name.toLowerCase()}`}>{name}</span>;
}

export function ProgressBar({ value, label, text }: { value: number; label: string; text?: string }) {
  const pct = Math.max(0, Math.min(100, Math.round(value * 100)));
  const id = useId();
  return (
    <div className="progress">
      <progress id={id} max={100} value={pct} aria-label={label} />
      <span className="progress-text">
        {pct}%{text ? ` — ${text}` : ""}
      </span>
    </div>
  );
}

/** A modal dialog on the native <dialog> element: the rest of the page is inert while it is
 * open (focus stays inside), Escape closes it, and focus returns to what opened it. */
export function Dialog({
  open,
  title,
  onClose,
  children,
}: {
  open: boolean;
  title: string;
  onClose: () => void;
  children: ReactNode;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const opener = useRef<Element | null>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) {
      opener.current = document.activeElement;
      d.showModal();
      const first = d.querySelector<HTMLElement>("[autofocus], input, textarea, select, button");
      first?.focus();
    } else if (!open && d.open) {
      d.close();
      if (opener.current instanceof HTMLElement) opener.current.focus();
    }
  }, [open]);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    const cancel = (e: Event) => {
      e.preventDefault();
      onClose();
    };
    d.addEventListener("cancel", cancel);
    return () => d.removeEventListener("cancel", cancel);
  }, [onClose]);
  return (
    <dialog ref={ref} aria-labelledby={titleId} className="dialog">
      {open && (
        <>
          <h2 id={titleId}>{title}</h2>
          {children}
        </>
      )}
    </dialog>
  );
}

/** A definition list of label/value pairs. */
export function Facts({ items }: { items: [string, ReactNode][] }) {
  return (
    <dl className="facts">
      {items.map(([k, v]) => (
        <div key={k} className="fact">
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

/** A digest in monospace, wrapped anywhere (64 hex characters do not fit narrow screens). */
export function Digest({ value }: { value: string }) {
  return value ? <code className="digest">{value}</code> : <span>—</span>;
}

/** Page heading that receives focus after in-app navigation. */
export function PageTitle({ children }: { children: ReactNode }) {
  return (
    <h1 tabIndex={-1} className="page-title">
      {children}
    </h1>
  );
}

/** A horizontally scrollable table container, reachable by keyboard (narrow screens). */
export function TableWrap({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label={`${label} table`}>
      {children}
    </div>
  );
}

/** A data table in a labelled scroll region: a visually hidden caption (also the region's
 * label), one `<th scope="col">` per column, and the body rows given as children. */
export function DataTable({
  caption,
  columns,
  className,
  children,
}: {
  caption: string;
  columns: readonly string[];
  className?: string;
  children: ReactNode;
}) {
  return (
    <TableWrap label={caption}>
      <table className={className}>
        <caption className="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c} scope="col">
                {c}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </TableWrap>
  );
}
