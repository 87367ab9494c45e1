// The "Tool" select of the runs filter and of the run submission: the tenant's tools by id.
import type { Tool } from "../gen/flnet/api/control/v1/tool_pb";
import { parseToolId } from "../lib/names";

interface Props {
  id: string;
  /** The chosen tool id; "" for none. */
  value: string;
  tools: Tool[] | undefined;
  /** The text of the first option, the one for "" (no tool). */
  noneLabel: string;
  onChange: (toolId: string) => void;
  /** Also offer `value` when it is not among `tools` (a filter from a link). */
  keepUnlisted?: boolean;
}

export function ToolSelect({ id, value, tools, noneLabel, onChange, keepUnlisted = false }: Props) {
  const listed = (tools ?? []).map((t) => ({ name: t.name, id: parseToolId(t.name) ?? t.name }));
  return (
    <div className="tool">
      <label htmlFor={id}>Tool</label>
      <select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">{noneLabel}</option>
        {listed.map((t) => (
          <option key={t.name} value={t.id}>
            {t.id}
          </option>
        ))}
        {keepUnlisted && value && !listed.some((t) => t.id === value) && <option value={value}>{value}</option>}
      </select>
    </div>
  );
}
