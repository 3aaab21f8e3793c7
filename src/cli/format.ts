// Human-readable output of the CLI: aligned tables of key sets and keys.
import type { KeyDescription, KeySetDescription } from '../client.js';

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** 2026-01-02T03:04:05.678Z -> 2026-01-02 03:04:05Z */
export const shortTime = (iso: string | undefined) => (iso === undefined ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'));

function ended(key: KeyDescription): string {
  if (key.revoked_at !== undefined) return `revoked ${shortTime(key.revoked_at)}`;
  if (key.retired_at !== undefined) return `retired ${shortTime(key.retired_at)}`;
  return '-';
}

export function keySet(set: KeySetDescription): string {
  const summary = [
    `key set ${set.key_set} (${set.alg}), generation ${set.generation}, updated ${shortTime(set.updated_at)}`,
    `active key ${set.active_kid}${set.next_rotation_at !== undefined ? `, next rotation ${shortTime(set.next_rotation_at)}` : ''}`,
  ];
  const rows = set.keys.map((key) => [
    key.kid,
    key.state,
    key.published ? 'yes' : 'no',
    shortTime(key.created_at),
    shortTime(key.activated_at),
    ended(key),
    shortTime(key.deleted_at),
    key.has_certificate ? 'yes' : 'no',
  ]);
  return `${summary.join('\n')}\n\n${table(['KID', 'STATE', 'JWKS', 'CREATED', 'ACTIVATED', 'ENDED', 'DELETED', 'CERT'], rows)}\n`;
}
