// Errors of API calls as the UI shows them: the gRPC code, the server's message, its
// google.rpc.BadRequest field violations and google.rpc.ErrorInfo reason.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";

export interface Violation {
  field: string;
  description: string;
}

export interface Problem {
  code: Code | undefined;
  /** "NOT_FOUND", "PERMISSION_DENIED", ... ("" for non-API errors). */
  codeName: string;
  message: string;
  violations: Violation[];
  reason?: string;
}

export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export function toProblem(e: unknown): Problem {
  if (e instanceof ConnectError) {
    const violations: Violation[] = [];
    let reason: string | undefined;
    try {
      for (const br of e.findDetails(BadRequestSchema)) {
        for (const v of br.fieldViolations) violations.push({ field: v.field, description: v.description });
      }
      const info = e.findDetails(ErrorInfoSchema)[0];
      if (info?.reason) reason = info.reason;
    } catch {
      // Undecodable details: the message still says what happened.
    }
    const p: Problem = { code: e.code, codeName: codeName(e.code), message: e.rawMessage || codeName(e.code), violations };
    if (reason) p.reason = reason;
    return p;
  }
  if (e instanceof Error) return { code: undefined, codeName: "", message: e.message, violations: [] };
  return { code: undefined, codeName: "", message: String(e), violations: [] };
}

export function isCode(e: unknown, code: Code): boolean {
  return e instanceof ConnectError && e.code === code;
}

export function isAbort(e: unknown): boolean {
  return (
    (e instanceof DOMException && e.name === "AbortError") ||
    (e instanceof ConnectError && e.code === Code.Canceled && /abort/i.test(e.rawMessage))
  );
}

/** Whether a failed call or stream may succeed when tried again. */
export function isRetryable(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return true; // network errors surface as plain errors
  return [Code.Unavailable, Code.Unknown, Code.Internal, Code.DeadlineExceeded, Code.Aborted, Code.ResourceExhausted, Code.Canceled].includes(
    e.code,
  );
}

/** Whether a broken server stream should be resumed. A stream cut off mid-message surfaces
 * as a client-side protocol error (INVALID_ARGUMENT "protocol error: …", "missing trailer"),
 * a dropped connection as UNKNOWN or UNAVAILABLE: both resume. What the server refused for
 * good (not found, permission, credentials, a bad request) does not. */
export function isStreamRetryable(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return true;
  switch (e.code) {
    case Code.NotFound:
    case Code.PermissionDenied:
    case Code.Unauthenticated:
    case Code.Unimplemented:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return false;
    case Code.InvalidArgument:
      return /protocol error|envelope|trailer|end flag/i.test(e.rawMessage);
    default:
      return true;
  }
}
