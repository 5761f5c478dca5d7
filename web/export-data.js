// "Export": the archive of everything the server keeps of the user, saved as a download.
import { $, toast } from './dom.js';
import { client } from './state.js';

export async function exportData() {
  const button = $('export-btn');
  button.disabled = true;
  toast('Preparing your data…');
  try {
    const { blob, filename } = await client.exportData();
    const url = URL.createObjectURL(blob);
    const link = Object.assign(document.createElement('a'), { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    // The download has its own copy once it starts; the URL only has to outlive the click.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    toast('Your data is saved as a download.');
  } catch (e) {
    toast(`The export failed: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}
