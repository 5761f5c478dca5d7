// Attachments as messages show them: pictures, videos and other files, with the signed URLs client.media() gives
// (the uploads started from the composer are in uploads.js).
import { el } from './dom.js';
import { formatSize } from './format.js';
import { client } from './state.js';

/** image, video or file: how an attachment is shown (from the type the server sniffed, never the name). */
export function kindOf(a) {
  const t = a.content_type ?? '';
  return t.startsWith('image/') ? 'image' : t.startsWith('video/') ? 'video' : 'file';
}

/** The size to show a picture at: within a `max` px box, never upscaled (null when the size is not known). */
function fitBox(w, h, max) {
  if (!w || !h) return null;
  const k = Math.min(1, max / w, max / h);
  return [Math.max(1, Math.round(w * k)), Math.max(1, Math.round(h * k))];
}

/** Gives `el` a fixed size (and aspect ratio) before its bytes arrive, so the log does not jump when they do. */
function reserve(e, box) {
  if (!box) return;
  e.width = box[0];
  e.height = box[1];
  // Through the CSSOM: the page's CSP refuses inline style attributes, not this.
  e.style.aspectRatio = `${box[0]} / ${box[1]}`;
}

/** The first of `names` the upload has (variants are absent when the server made none, e.g. no upscaling). */
function variant(info, names) {
  for (const n of names) if (info.variants?.[n]?.url) return info.variants[n];
  return null;
}

/**
 * Fills in the signed URLs of attachment `a` with `apply(info)`: at once when client.media() has them cached
 * (re-renders do not flicker), else when they arrive. `holder` shows a failure.
 */
function withMedia(a, holder, apply) {
  const failed = () => {
    holder.classList.add('unavailable');
    holder.removeAttribute('href');
    holder.title = 'This attachment is no longer available';
  };
  const use = (info) => (info.state === 'ready' ? apply(info) : failed());
  const hit = client.cachedMedia(a.media_id);
  if (hit) use(hit);
  else client.media(a.media_id).then(use, failed);
  return failed;
}

export function attachmentsEl(list) {
  if (!list?.length) return null;
  return el('div', { class: 'attachments' }, list.map(attachmentEl));
}

function attachmentEl(a) {
  const label = a.filename || 'attachment';
  const size = formatSize(a.size);
  if (kindOf(a) === 'image') {
    const img = el('img', { alt: label, decoding: 'async' });
    reserve(img, fitBox(a.width, a.height, 300));
    const link = el('a', { class: 'att att-image', target: '_blank', rel: 'noopener noreferrer', title: `${label} (${size}): open the original`, dataset: { media: a.media_id } }, img);
    const apply = (info) => {
      const thumb = variant(info, ['thumb_300', 'thumb_150', 'original']);
      const original = variant(info, ['original']);
      if (thumb) img.src = thumb.url;
      if (original) link.href = original.url;
    };
    const failed = withMedia(a, link, apply);
    // A URL that stopped working (expired while the page slept, or taken down): ask once for fresh ones.
    let retried = false;
    img.addEventListener('error', () => {
      if (retried) return failed();
      retried = true;
      client.media(a.media_id, { fresh: true }).then((info) => (info.state === 'ready' ? apply(info) : failed()), failed);
    });
    return link;
  }
  if (kindOf(a) === 'video') {
    const video = el('video', { controls: true, preload: 'metadata', 'aria-label': label, dataset: { media: a.media_id } });
    reserve(video, fitBox(a.width, a.height, 360));
    const caption = el('a', { class: 'att-caption', target: '_blank', rel: 'noopener noreferrer', download: label }, `${label} · ${size}`);
    withMedia(a, caption, (info) => {
      const poster = variant(info, ['poster', 'thumb_600', 'thumb_300']);
      const source = variant(info, ['720p', '360p', 'original']);
      if (poster) video.poster = poster.url;
      if (source) video.append(el('source', { src: source.url, type: source.content_type }));
      const original = variant(info, ['original']);
      if (original) caption.href = original.url;
    });
    return el('figure', { class: 'att att-video' }, video, el('figcaption', {}, caption));
  }
  const link = el(
    'a',
    { class: 'att att-file', download: label, rel: 'noopener noreferrer', dataset: { media: a.media_id } },
    el('span', { class: 'att-icon', 'aria-hidden': 'true', text: '📄' }),
    el('span', { class: 'att-name', text: label }),
    el('span', { class: 'att-size', text: size }),
  );
  withMedia(a, link, (info) => {
    const original = variant(info, ['original']);
    if (original) link.href = original.url;
  });
  return link;
}
