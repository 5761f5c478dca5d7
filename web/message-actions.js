// What clicks and keys in the message log do: a message's buttons (reply, thread, react, edit, delete, report, and retry
// or discard for a failed send), quotes that jump to the quoted message, arrow keys between messages.
import { $, toast } from './dom.js';
import { S, client, me } from './state.js';
import { toggleReactPicker } from './message-list.js';
import { applyMessage } from './conversations.js';
import { setMode } from './composer.js';
import { openReport } from './dialogs.js';
import { openThread } from './threads.js';

export async function onMessageAction(ev) {
  const btn = ev.target.closest('button[data-act], button[data-goto]');
  if (!btn) return;
  const li = btn.closest('.msg');
  const c = S.convs.get(S.open);
  if (!c || !li) return;
  if (btn.dataset.goto) {
    const target = $('message-list').querySelector(`.msg[data-seq="${btn.dataset.goto}"]`);
    target?.scrollIntoView({ block: 'center' });
    target?.focus();
    return;
  }
  const seq = Number(li.dataset.seq);
  const m = c.msgs?.get(seq);
  try {
    switch (btn.dataset.act) {
      case 'reply':
        return setMode({ kind: 'reply', seq });
      case 'open-thread':
        return openThread(c, seq);
      case 'edit':
        return setMode({ kind: 'edit', seq });
      case 'react':
        return toggleReactPicker(li);
      case 'pick-reaction': {
        const users = m?.reactions?.[btn.dataset.emoji] ?? [];
        toggleReactPicker(li, false);
        li.focus();
        return applyMessage(await client.react(c.id, seq, btn.dataset.emoji, !users.includes(me())), false);
      }
      case 'toggle-reaction': {
        const pressed = btn.getAttribute('aria-pressed') === 'true';
        return applyMessage(await client.react(c.id, seq, btn.dataset.emoji, !pressed), false);
      }
      case 'delete':
        if (!confirm('Delete this message for everyone?')) return;
        return applyMessage(await client.deleteMessage(c.id, seq), false);
      case 'report':
        return openReport(c, m);
      case 'retry':
        return client.retry(li.dataset.cmid);
      case 'discard':
        return client.discard(li.dataset.cmid);
    }
  } catch (e) {
    toast(`That did not work: ${e.message}`);
  }
}

export function onMessagesKey(ev) {
  const items = [...$('message-list').querySelectorAll('.msg')];
  if (!items.length) return;
  const current = ev.target.closest('.msg');
  const onItem = current === ev.target;
  let i = current ? items.indexOf(current) : items.length;
  if (ev.key === 'Escape' && current?.querySelector('.react-picker')) {
    toggleReactPicker(current);
    ev.preventDefault();
    return;
  }
  if (!onItem && ev.target !== $('messages')) return; // keys inside a button keep their meaning
  if (ev.key === 'ArrowUp') i = Math.max(0, i - 1);
  else if (ev.key === 'ArrowDown') i = Math.min(items.length - 1, current ? i + 1 : items.length - 1);
  else if (ev.key === 'Home') i = 0;
  else if (ev.key === 'End') i = items.length - 1;
  else return;
  ev.preventDefault();
  items[i].focus();
  items[i].scrollIntoView({ block: 'nearest' });
}
