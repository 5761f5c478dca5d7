// Presence: whether other users are online, away or offline, from the server's presence frames and queries.
import { $ } from './dom.js';
import { S, client, hooks, scheduleRender } from './state.js';

/** A peer's status; "unknown" while this device is not connected (what it knew may be stale). */
export function presenceOf(userId) {
  if (!client.online) return 'unknown';
  return S.presence.get(userId)?.status ?? 'offline';
}

export function onPresence(f) {
  for (const u of f.users) S.presence.set(u.user_id, { status: u.status, last_seen: u.last_seen });
  scheduleRender({ list: true, header: true });
  if ($('dlg-members').open) hooks.renderMembers();
}

export async function refreshPresence(ids) {
  if (!client.online) return;
  const users = ids ?? [...new Set([...S.convs.values()].map((c) => c.peer).filter(Boolean))];
  if (!users.length) return;
  try {
    onPresence({ users: await client.queryPresence(users) });
  } catch {
    /* best effort */
  }
}
