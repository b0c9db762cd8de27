// The identicon (tui/sdparta/ui/identicon.py): a left-right symmetric "drunken bishop" randomart of a
// key fingerprint, as data a UI can draw: rows of level glyphs, a level (0–4) per cell, and the four
// colours of levels 1–4 (one hue from the fingerprint's hash, dim to bright).
import { utf8 } from "sdparta/bytes.js";
import { sha256 } from "@noble/hashes";

export const IDENTICON_SIZE = 7;
export const IDENTICON_LEVELS = " .oO@"; // visit count 0, 1, 2, 3, ≥ 4
export const MONO_SHADES = Object.freeze({ ".": "░", o: "▒", O: "▓", "@": "█" });

/** Visit levels per cell (size rows of size numbers 0–4), exactly as identicon_grid walks. */
export function identiconCells(fingerprint, size = IDENTICON_SIZE, steps = 32) {
  const digest = sha256(utf8(fingerprint));
  let bits = 0n;
  for (const b of digest.subarray(3)) bits = (bits << 8n) | BigInt(b);
  const half = (size + 1) >> 1;
  const visits = Array.from({ length: size }, () => new Array(half).fill(0));
  let x = half - 1;
  let y = size >> 1;
  for (let i = 0; i < steps; i++) {
    const step = Number((bits >> BigInt(2 * i)) & 3n);
    x = Math.min(half - 1, Math.max(0, x + (step & 1 ? 1 : -1)));
    y = Math.min(size - 1, Math.max(0, y + (step & 2 ? 1 : -1)));
    visits[y][x] += 1;
  }
  const top = IDENTICON_LEVELS.length - 1;
  return visits.map((line) => {
    const left = line.map((n) => Math.min(top, n));
    return [...left, ...left.slice(0, size - half).reverse()];
  });
}

/** The grid as identicon_grid returns it: one string of level glyphs per row. */
export function identiconGrid(fingerprint, size = IDENTICON_SIZE, steps = 32) {
  return identiconCells(fingerprint, size, steps).map((row) => row.map((n) => IDENTICON_LEVELS[n]).join(""));
}

/** {".": "#rrggbb", "o": …, "O": …, "@": …} as identicon_colours returns it. */
export function identiconColours(fingerprint) {
  const digest = sha256(utf8(fingerprint));
  const [r, g, b] = digest;
  const top = Math.max(r, g, b, 1);
  const bright = [r, g, b].map((c) => Math.min(255, 80 + Math.floor((c * 175) / top)));
  const out = {};
  [...IDENTICON_LEVELS.slice(1)].forEach((level, i) => {
    out[level] = "#" + bright.map((c) => Math.floor((c * (i + 2)) / 5).toString(16).padStart(2, "0")).join("");
  });
  return out;
}

/** Everything a UI needs: {size, cells (levels), rows (glyphs), colours[level] (null for 0), mono[level]}. */
export function identicon(fingerprint, size = IDENTICON_SIZE) {
  const cells = identiconCells(fingerprint, size);
  const named = identiconColours(fingerprint);
  const levels = [...IDENTICON_LEVELS];
  return Object.freeze({
    size,
    cells,
    rows: cells.map((row) => row.map((n) => levels[n]).join("")),
    colours: [null, ...levels.slice(1).map((l) => named[l])],
    mono: [" ", ...levels.slice(1).map((l) => MONO_SHADES[l])],
  });
}
