// The words the interface shows for people, conversations and messages: names (fetching the profiles it does not
// know yet), titles, system notices, previews and quotes.
import { $ } from './dom.js';
import { client, hooks, me, scheduleRender } from './state.js';
import { kindOf } from './attachments.js';

export function name(userId) {
  if (!userId) return '';
  if (userId === me()) return 'You';
  const u = client.users.get(userId);
  if (u) return u.deleted ? 'Deleted user' : u.username;
  wantProfile(userId);
  return 'someone';
}

const wanted = new Set();
export function wantProfile(id) {
  if (wanted.has(id)) return;
  wanted.add(id);
  client.userProfile(id).then(() => {
    scheduleRender({ list: true, messages: true, header: true });
    if ($('dlg-members').open) hooks.renderMembers();
  }, () => {});
}

export function convTitle(c) {
  if (c.kind === 'group') return c.title || 'Group';
  return c.peer ? name(c.peer) : 'Conversation';
}

export function systemText(m) {
  const s = m.system;
  const who = name(m.sender);
  switch (s.kind) {
    case 'member_added':
      return `${who} added ${name(s.user_id)}`;
    case 'member_removed':
      return `${who} removed ${name(s.user_id)}`;
    case 'member_left':
      return `${name(s.user_id)} left`;
    case 'role_changed':
      return `${name(s.user_id)} is now ${s.role === 'owner' ? 'the owner' : `${s.role === 'admin' ? 'an' : 'a'} ${s.role}`}`;
    case 'title_changed':
      return `${who} renamed the group to “${s.title}”`;
    default:
      return 'The conversation changed';
  }
}

/** A message's text for a preview or a quote: its body, or what it attaches when the body is empty. */
export function snippet(m, length = 80) {
  const text = m.body.replace(/\s+/g, ' ').trim();
  if (text || !m.attachments?.length) return text.slice(0, length);
  const a = m.attachments[0];
  const what = kindOf(a) === 'image' ? 'Photo' : kindOf(a) === 'video' ? 'Video' : a.filename || 'File';
  return `📎 ${what}${m.attachments.length > 1 ? ` and ${m.attachments.length - 1} more` : ''}`;
}

export function preview(m) {
  if (!m) return '';
  if (m.system) return systemText(m);
  if (m.deleted) return 'Message deleted';
  return (m.sender === me() ? 'You: ' : '') + snippet(m);
}
