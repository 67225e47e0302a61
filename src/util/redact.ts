import { StringDecoder } from 'node:string_decoder';
import { Transform, type TransformCallback } from 'node:stream';

/*
 * Secrets out of text that leaves the site (`ferry support-bundle`), line by line so that it works
 * on a stream of any length: private key blocks, the values of secret-named keys in YAML, JSON,
 * `key=value` and `--flag value` forms, bearer and basic credentials, kubeadm bootstrap tokens,
 * passwords in URLs, and literal values the caller knows are secret. It errs towards redacting
 * too much: a diagnosis never needs a secret.
 */

export const REDACTED = '<redacted>';

/** Key names whose values are secret, compared without case, '-', '_' and '.'. */
const SECRET_PARTS = ['token', 'password', 'passwd', 'passphrase', 'secret', 'clientkeydata', 'certificatekey', 'privatekey', 'apikey', 'credential', 'creds'];
const SECRET_EXACT = new Set(['auth', 'pass']);

/** Whether a key or flag name (`client-key-data`, `--certificate-key`, `"token"`, `PASSWORD`) names a secret. */
export function isSecretKey(name: string): boolean {
  const k = name.replace(/^-+/, '').replace(/[-_.]/g, '').toLowerCase();
  return SECRET_EXACT.has(k) || SECRET_PARTS.some((p) => k.includes(p));
}

const PEM_BEGIN = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----/;
const PEM_END = /-----END ([A-Z0-9 ]*)PRIVATE KEY-----/;
/** A whole private key on one line (JSON with \n escapes, a log line). */
const PEM_INLINE = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----/g;
const YAML_KEY = /^(\s*(?:-\s+)?)(["']?)([A-Za-z0-9_.\-]+)\2(\s*:)(\s*)(.*)$/;
const JSON_PAIR = /"([^"\\]+)"(\s*:\s*)"((?:[^"\\]|\\.)*)"/g;
const KEY_EQ = /(^|[\s,;?&"'{(])(-{0,2}[A-Za-z][A-Za-z0-9_.\-]*)=("[^"]*"|'[^']*'|[^\s,;&"'})]+)/g;
const FLAG_SPACE = /(--[A-Za-z][A-Za-z0-9-]*)(\s+)([^\s-]\S*)/g;
const AUTH_HEADER = /\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{6,}/gi;
/** A kubeadm bootstrap token: 6 and 16 characters of [a-z0-9] around a dot. */
const BOOTSTRAP_TOKEN = /\b[a-z0-9]{6}\.[a-z0-9]{16}\b/g;
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^/\s:@]+:[^/\s@]+@/gi;
/** kubeadm prints the certificate key on the line after this one. */
const SECRET_NEXT_LINE = /(certificate key|join token|bootstrap token|password):\s*$/i;

const indentOf = (l: string) => /^\s*/.exec(l)![0].length;

/** Redacts one text line by line; it keeps the state a secret spans lines with (a key block, a YAML block scalar). */
export class Redactor {
  private inPem = false;
  private blockIndent: number | undefined;
  private nextLine = false;
  private readonly known: string[];

  constructor(known: Iterable<string> = []) {
    // Short literals would blank out ordinary words.
    this.known = [...new Set([...known].filter((k) => k && k.length >= 6))].sort((a, b) => b.length - a.length);
  }

  /** A new text begins: forget the state of the last one. */
  reset(): void {
    this.inPem = false;
    this.blockIndent = undefined;
    this.nextLine = false;
  }

  line(input: string): string {
    let l = input;
    if (this.inPem) {
      if (PEM_END.test(l)) {
        this.inPem = false;
        // Key material before the END marker on its line goes too; indentation stays.
        return l.replace(/^(\s*)\S.*?(-----END)/, (m, sp: string, end: string) => (m.trimStart().startsWith('-----END') ? m : `${sp}${REDACTED} ${end}`));
      }
      return REDACTED;
    }
    if (this.blockIndent !== undefined) {
      if (!l.trim() || indentOf(l) > this.blockIndent) return l.trim() ? `${' '.repeat(indentOf(l))}${REDACTED}` : l;
      this.blockIndent = undefined;
    }
    if (this.nextLine && l.trim()) {
      this.nextLine = false;
      return `${' '.repeat(indentOf(l))}${REDACTED}`;
    }
    l = l.replace(PEM_INLINE, (_m, kind: string) => `-----BEGIN ${kind}PRIVATE KEY-----${REDACTED}-----END ${kind}PRIVATE KEY-----`);
    const begin = PEM_BEGIN.exec(l);
    if (begin && !PEM_END.test(l.slice(begin.index))) {
      this.inPem = true;
      l = l.slice(0, begin.index + begin[0].length);
    }
    l = l.replace(JSON_PAIR, (m, k: string, sep: string) => (isSecretKey(k) ? `"${k}"${sep}"${REDACTED}"` : m));
    const y = YAML_KEY.exec(l);
    if (y && isSecretKey(y[3]!)) {
      const value = y[6]!;
      if (value === '' || /^[|>][-+0-9]*\s*(#.*)?$/.test(value)) this.blockIndent = indentOf(l);
      else if (!value.includes(REDACTED)) l = `${y[1]}${y[2]}${y[3]}${y[2]}${y[4]}${y[5]}${/^".*",\s*$/.test(value) ? `"${REDACTED}",` : REDACTED}`;
    }
    l = l.replace(KEY_EQ, (m, pre: string, k: string) => (isSecretKey(k) ? `${pre}${k}=${REDACTED}` : m));
    l = l.replace(FLAG_SPACE, (m, flag: string, sp: string, v: string) => (isSecretKey(flag) && v !== REDACTED ? `${flag}${sp}${REDACTED}` : m));
    l = l.replace(AUTH_HEADER, (_m, kind: string, sp: string) => `${kind}${sp}${REDACTED}`);
    l = l.replace(BOOTSTRAP_TOKEN, REDACTED);
    l = l.replace(URL_USERINFO, `$1${REDACTED}@`);
    for (const k of this.known) if (l.includes(k)) l = l.split(k).join(REDACTED);
    if (SECRET_NEXT_LINE.test(l)) this.nextLine = true;
    return l;
  }

  /** A whole text (pure, for tests and small documents). */
  text(t: string): string {
    this.reset();
    return t.split('\n').map((l) => this.line(l)).join('\n');
  }
}

/** The pure form: a whole text redacted, with `known` secrets blanked as well. */
export const redact = (text: string, known: Iterable<string> = []) => new Redactor(known).text(text);

/** A line longer than this is redacted in pieces (a secret cut at the seam could escape; text has no such lines). */
const MAX_LINE = 1 << 20;

/** A stream that redacts the text passing through it, one line at a time, in bounded memory. */
export function redactStream(r: Redactor = new Redactor()): Transform {
  let pending = '';
  // A character cut between two chunks is joined before it is read.
  const dec = new StringDecoder('utf8');
  return new Transform({
    transform(chunk: Buffer | string, _enc: BufferEncoding, cb: TransformCallback) {
      pending += typeof chunk === 'string' ? chunk : dec.write(chunk);
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      let out = lines.map((l) => `${r.line(l)}\n`).join('');
      while (pending.length > MAX_LINE) {
        out += r.line(pending.slice(0, MAX_LINE));
        pending = pending.slice(MAX_LINE);
      }
      cb(null, out);
    },
    flush(cb: TransformCallback) {
      pending += dec.end();
      cb(null, pending ? r.line(pending) : '');
    },
  });
}
