// Typing indicators: the other members' (in the list and above the message box), and this user's own.
import { $ } from './dom.js';
import { S, client, me, scheduleRender } from './state.js';
import { name } from './labels.js';

export function typingNames(convId) {
  const t = S.typing.get(convId);
  if (!t || !t.size) return '';
  const names = [...t.keys()].map(name);
  return names.length === 1 ? `${names[0]} is` : names.length === 2 ? `${names[0]} and ${names[1]} are` : `${names.length} people are`;
}

export function stopTyping(convId, userId) {
  const t = S.typing.get(convId);
  if (!t?.has(userId)) return;
  clearTimeout(t.get(userId));
  t.delete(userId);
  renderTypingLine();
  scheduleRender({ list: true });
}

export function onTyping(f) {
  if (f.user_id === me()) return;
  if (!S.typing.has(f.conversation_id)) S.typing.set(f.conversation_id, new Map());
  const t = S.typing.get(f.conversation_id);
  clearTimeout(t.get(f.user_id));
  if (f.active) t.set(f.user_id, setTimeout(() => stopTyping(f.conversation_id, f.user_id), f.ttl_ms));
  else t.delete(f.user_id);
  renderTypingLine();
  scheduleRender({ list: true });
}

export function renderTypingLine() {
  const who = S.open ? typingNames(S.open) : '';
  $('typing').textContent = who ? `${who} typing…` : '';
}

export function sendTyping(active) {
  const id = active ? S.open : S.typingIn;
  if (!id) return;
  const now = Date.now();
  if (active) {
    if (S.typingIn === id && now - S.typingSentAt < 2500) return; // repeat about every 2.5 s while typing
    if (S.typingIn && S.typingIn !== id) client.typing(S.typingIn, false);
    if (client.typing(id, true)) {
      S.typingIn = id;
      S.typingSentAt = now;
    }
  } else {
    client.typing(id, false);
    S.typingIn = null;
    S.typingSentAt = 0;
  }
}
