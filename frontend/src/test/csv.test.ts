import { describe, expect, it } from "vitest";
import { parseCsv, sniffDelimiter } from "../lib/csv";

describe("parseCsv", () => {
  it("parses plain rows with LF, CRLF and CR line ends", () => {
    expect(parseCsv("a,b\n1,2\r\n3,4\r5,6").rows).toEqual([
      ["a", "b"],
      ["1", "2"],
      ["3", "4"],
      ["5", "6"],
    ]);
  });

  it("handles quotes, escaped quotes, delimiters and line breaks inside quotes", () => {
    expect(parseCsv('name,note\n"Smith, J","said ""hi""\nthen left"\n').rows).toEqual([
      ["name", "note"],
      ["Smith, J", 'said "hi"\nthen left'],
    ]);
  });

  it("keeps empty fields and ignores one trailing newline", () => {
    expect(parseCsv("a,,c\n,,\n").rows).toEqual([
      ["a", "", "c"],
      ["", "", ""],
    ]);
    expect(parseCsv("").rows).toEqual([]);
  });

  it("strips a byte order mark and honours other delimiters", () => {
    expect(parseCsv("\ufeffx;y\n1;2", { delimiter: ";" }).rows).toEqual([
      ["x", "y"],
      ["1", "2"],
    ]);
  });

  it("stops at maxRows and says so", () => {
    const r = parseCsv("h\n1\n2\n3\n", { maxRows: 2 });
    expect(r.rows).toEqual([["h"], ["1"]]);
    expect(r.truncated).toBe(true);
    expect(parseCsv("h\n1\n", { maxRows: 2 }).truncated).toBe(false);
  });

  it("guesses the delimiter from the header", () => {
    expect(sniffDelimiter("a;b;c\n1;2;3")).toBe(";");
    expect(sniffDelimiter("a\tb\n")).toBe("\t");
    expect(sniffDelimiter("abc")).toBe(",");
  });
});
