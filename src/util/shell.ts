/** One word for sh, always quoted: safe for any string (a ' becomes '\''). */
export const shQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** One word for sh, quoted only when it needs it, so the usual file names stay readable. */
export const shWord = (s: string) => (/^[\w./+=:@%-]+$/.test(s) ? s : shQuote(s));
