// Attachments from the composer: each file picked, dropped or pasted is uploaded at once, shown in the composer
// with its progress (or the reason it was refused), and sent in a message as soon as the server has it ready.
import { $, el } from './dom.js';
import { formatSize } from './format.js';
import { S, client } from './state.js';
import { sendTyping } from './typing.js';
import { nearBottom, scrollToBottom } from './message-list.js';
import { autosize, setMode } from './composer.js';

/** What the pipeline's rejection reasons (docs/media.md) mean, for people. */
const REJECTIONS = {
  type_not_allowed: 'this kind of file is not accepted',
  malware: 'the virus scanner found malware in it',
  scan_failed: 'it could not be scanned for viruses',
  blocked: 'it matches an image that is not allowed',
  moderation_failed: 'it could not be checked by moderation',
  too_large: 'it is too large',
  corrupt: 'the file is damaged or not what it claims to be',
  taken_down: 'this content was taken down',
  expired: 'the upload took too long',
  failed: 'it could not be processed',
};

let uploadKeys = 0;

/**
 * Uploads a file picked (dropped, pasted) in the open conversation. It shows in the composer with its progress;
 * once the server has it ready, the message is sent with it and whatever text is in the box (possibly none).
 * A refusal stays in the composer with its reason, and nothing is sent.
 */
export function startUpload(file, u = null) {
  const c = S.convs.get(S.open);
  if (!c || c.left) return;
  u ??= { key: `u${++uploadKeys}`, convId: c.id, file };
  Object.assign(u, { state: 'uploading', sent: 0, total: file.size, error: null, controller: new AbortController() });
  S.uploads.set(u.key, u);
  renderUploads();
  client
    .upload(file, {
      signal: u.controller.signal,
      onProgress: (p) => {
        u.sent = p.sent;
        u.state = p.phase;
        renderUploads();
      },
    })
    .then(
      (info) => {
        S.uploads.delete(u.key);
        renderUploads();
        sendWithAttachment(u.convId, info);
      },
      (e) => {
        if (e.code === 'aborted') {
          S.uploads.delete(u.key);
        } else {
          u.state = e.code === 'rejected' ? 'rejected' : 'failed';
          u.error = e;
        }
        renderUploads();
      },
    );
}

function sendWithAttachment(convId, info) {
  const open = S.open === convId;
  const input = $('composer-input');
  // The text in the box goes with it, unless the box holds something else (an edit, or another conversation).
  const takeText = open && S.mode?.kind !== 'edit';
  const body = takeText ? input.value : '';
  const replyTo = takeText && S.mode?.kind === 'reply' ? S.mode.seq : null;
  client.send(convId, body.trim() ? body : '', { replyTo, attachments: [info] });
  if (takeText) {
    input.value = '';
    setMode(null);
    autosize();
    sendTyping(false);
    scrollToBottom();
  }
}

function uploadStatus(u) {
  const pct = u.total ? Math.floor((100 * u.sent) / u.total) : 100;
  switch (u.state) {
    case 'uploading':
      return `Uploading… ${pct}%`;
    case 'processing':
      return 'Checking…';
    case 'rejected':
      return `refused: ${u.error.reason}${REJECTIONS[u.error.reason] ? ` (${REJECTIONS[u.error.reason]})` : ''}`;
    default:
      return `Could not upload: ${u.error?.message ?? 'failed'}`;
  }
}

export function renderUploads() {
  const ul = $('composer-uploads');
  const mine = [...S.uploads.values()].filter((u) => u.convId === S.open);
  ul.hidden = !mine.length;
  // Items are updated in place while their state stays the same: a progress step must not re-create (and so
  // re-announce) the alert of another upload's refusal.
  const old = new Map([...ul.children].map((li) => [li.dataset.key, li]));
  const atBottom = nearBottom(); // the list takes room from the log: keep the newest message in view
  ul.replaceChildren(
    ...mine.map((u) => {
      const li = old.get(u.key);
      if (li && li.dataset.state === u.state) {
        const bar = li.querySelector('progress');
        if (bar && u.state === 'uploading') bar.value = u.sent;
        li.querySelector('.upload-state').textContent = uploadStatus(u);
        return li;
      }
      return uploadEl(u);
    }),
  );
  if (atBottom) scrollToBottom();
}

function uploadEl(u) {
  const busy = u.state === 'uploading' || u.state === 'processing';
  const name = u.file.name || 'file';
  return el(
    'li',
    { class: `upload ${u.state}`, dataset: { key: u.key, state: u.state } },
    el('span', { class: 'upload-name', text: name }),
    el('span', { class: 'upload-size', text: formatSize(u.total) }),
    busy ? el('progress', { max: u.total || 1, value: u.state === 'processing' ? null : u.sent, 'aria-label': `Uploading ${name}` }) : null,
    // A refusal or a failure is announced (role=alert); progress is not, it would be too chatty.
    el('span', { class: busy ? 'upload-state' : 'upload-state error', role: busy ? null : 'alert', text: uploadStatus(u) }),
    !busy && u.error?.detail ? el('span', { class: 'upload-detail', text: u.error.detail }) : null,
    u.state === 'failed' ? el('button', { type: 'button', class: 'small', dataset: { upload: 'retry' }, 'aria-label': `Retry uploading ${name}`, text: 'Retry' }) : null,
    el('button', {
      type: 'button',
      class: 'small',
      dataset: { upload: busy ? 'cancel' : 'dismiss' },
      'aria-label': `${busy ? 'Cancel uploading' : 'Dismiss'} ${name}`,
      text: busy ? 'Cancel' : 'Dismiss',
    }),
  );
}

export function onUploadAction(ev) {
  const btn = ev.target.closest('button[data-upload]');
  const u = btn && S.uploads.get(btn.closest('.upload')?.dataset.key);
  if (!u) return;
  if (btn.dataset.upload === 'cancel') u.controller.abort();
  else if (btn.dataset.upload === 'retry') return startUpload(u.file, u);
  S.uploads.delete(u.key);
  renderUploads();
  $('composer-input').focus();
}
