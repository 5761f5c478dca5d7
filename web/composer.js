// The message box: writing, replying and editing (files attached from it are in uploads.js).
import { $ } from './dom.js';
import { S, client } from './state.js';
import { name, snippet } from './labels.js';
import { sendTyping } from './typing.js';
import { scrollToBottom } from './message-list.js';
import { applyMessage } from './conversations.js';

export function setMode(mode) {
  S.mode = mode;
  const box = $('composer-context');
  const input = $('composer-input');
  if (!mode) {
    box.hidden = true;
    return;
  }
  const c = S.convs.get(S.open);
  const m = c?.msgs?.get(mode.seq);
  box.hidden = false;
  if (mode.kind === 'reply') {
    $('composer-context-text').textContent = `Replying to ${m ? `${name(m.sender)}: ${snippet(m)}` : `message #${mode.seq}`}`;
  } else {
    $('composer-context-text').textContent = 'Editing your message';
    input.value = m?.body ?? '';
    autosize();
  }
  input.focus();
}

export function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

export async function submitComposer() {
  const c = S.convs.get(S.open);
  const input = $('composer-input');
  const body = input.value;
  if (!c || c.left || !body.trim()) return;
  $('composer-error').textContent = '';
  if (S.mode?.kind === 'edit') {
    const seq = S.mode.seq;
    // Leave edit mode at once, so what is typed next is a new message, not a second edit of this one; the
    // text comes back with the error if the edit fails.
    input.value = '';
    setMode(null);
    try {
      const m = await client.edit(c.id, seq, body);
      applyMessage(m, false);
    } catch (e) {
      $('composer-error').textContent = `Could not edit: ${e.message}`;
      if (!input.value) {
        setMode({ kind: 'edit', seq });
        input.value = body;
      }
    }
  } else {
    const replyTo = S.mode?.kind === 'reply' ? S.mode.seq : null;
    client.send(c.id, body, { replyTo });
    input.value = '';
    setMode(null);
    scrollToBottom();
  }
  autosize();
  sendTyping(false);
}
