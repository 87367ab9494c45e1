import { describe, expect, it } from "vitest";
import { LogModel, visibleRange, type LogEntry } from "../lib/logModel";

const entry = (sequence: number, severity: number, message: string, traceback = ""): LogEntry => ({
  sequence,
  time: 0,
  severity,
  message,
  logger: "tool",
  caller: "tool.py:1 in main",
  traceback,
});

describe("LogModel", () => {
  it("expands multi-line messages and tracebacks into rows", () => {
    const m = new LogModel();
    expect(m.append([entry(1, 2, "one"), entry(2, 4, "two\nlines", "Traceback\n  File x\nValueError: bad\n")])).toBe(6);
    expect([...Array(m.rowCount).keys()].map((i) => m.row(i)!.text)).toEqual([
      "one",
      "two",
      "lines",
      "Traceback",
      "  File x",
      "ValueError: bad",
    ]);
    expect(m.row(2)!.line).toBe(1);
    expect(m.row(5)!.line).toBe(4);
  });

  it("filters by minimum severity and text, incrementally and on change", () => {
    const m = new LogModel();
    m.setFilter({ minSeverity: 3, query: "" });
    m.append([entry(1, 2, "info"), entry(2, 3, "warn disk"), entry(3, 4, "error net")]);
    expect(m.matchedCount).toBe(2);
    m.setFilter({ minSeverity: 0, query: "DISK" });
    expect(m.rowCount).toBe(1);
    expect(m.row(0)!.entry.sequence).toBe(2);
    m.append([entry(4, 1, "disk full")]);
    expect(m.rowCount).toBe(2);
    m.setFilter({ minSeverity: 0, query: "" });
    expect(m.rowCount).toBe(4);
  });

  it("handles many lines", () => {
    const m = new LogModel();
    const batch = Array.from({ length: 100_000 }, (_, i) => entry(i + 1, 2, `line ${i}`));
    m.append(batch);
    expect(m.rowCount).toBe(100_000);
    expect(m.row(99_999)!.text).toBe("line 99999");
  });
});

describe("visibleRange", () => {
  it("covers the viewport plus overscan, clamped to the rows", () => {
    expect(visibleRange(0, 400, 20, 1000, 10)).toEqual({ start: 0, end: 30 });
    expect(visibleRange(2000, 400, 20, 1000, 10)).toEqual({ start: 90, end: 130 });
    expect(visibleRange(19_900, 400, 20, 1000, 10)).toEqual({ start: 985, end: 1000 });
    expect(visibleRange(0, 400, 20, 0, 10)).toEqual({ start: 0, end: 0 });
  });
});
