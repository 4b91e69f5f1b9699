#!/usr/bin/env python3
"""Turns Jane Austen's six novels, as Debian's r-cran-janeaustenr package ships
them, into a small corpus in the WikiText-103 layout:

    OUT/wiki.train.tokens  OUT/wiki.valid.tokens  OUT/wiki.test.tokens

Standard library only. Usage: make_corpus.py RDATA_RDB OUT_DIR

- Source: <pkg>/data/Rdata.rdb, R's lazy-load database: six zlib-compressed,
  XDR-serialised character vectors (one per novel, one element per printed line).
- Text: paragraphs are the runs of non-empty lines; front matter before the
  first chapter and the back matter after "THE END"/"FINIS" are dropped;
  "VOLUME n" lines are dropped; chapters are renumbered 1..n per novel
  (Emma restarts its numbering each volume).
- Layout as WikiText: " = Novel = " per novel, " = = Chapter k = = " per
  chapter, one paragraph per line, blank lines " " around headings.
- Tokens as WikiText (Moses/PTB style): punctuation split off, "n't" and
  clitics ('s 'll 're 've 'd 'm) split, in-word hyphens as "@-@", thousands
  separators as "@,@", decimal points as "@.@", "--" as an em dash, the
  underscores that mark italics removed, abbreviations such as "Mr." kept.
- Splits by chapter: chapter k of a novel goes to valid when k % 20 == 10, to
  test when k % 20 == 0, else to train (about 5 % each, every novel represented).
- Vocabulary as WikiText: a token seen fewer than 3 times in the training
  split becomes <unk> in every split, and so does a valid/test token that the
  training vocabulary lacks.
"""

import collections
import os
import re
import struct
import sys
import zlib

TITLES = {
    "EMMA": "Emma",
    "MANSFIELD PARK": "Mansfield Park",
    "NORTHANGER ABBEY": "Northanger Abbey",
    "PERSUASION": "Persuasion",
    "PRIDE AND PREJUDICE": "Pride and Prejudice",
    "SENSE AND SENSIBILITY": "Sense and Sensibility",
}
MIN_COUNT = 3
ABBREVIATIONS = {"Mr.", "Mrs.", "Dr.", "St.", "Messrs.", "Esq.", "Col.", "Capt.", "Rev.", "ult.", "l."}


def read_rdb(path):
    """Yields the character vectors stored in an R lazy-load database."""
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        (expected,) = struct.unpack(">I", data[pos:pos + 4])
        inflater = zlib.decompressobj()
        blob = inflater.decompress(data[pos + 4:])
        pos = len(data) - len(inflater.unused_data)
        if len(blob) != expected:
            raise SystemExit(f"{path}: block of {len(blob)} bytes, header says {expected}")
        yield parse_character_vector(blob, path)


def parse_character_vector(blob, path):
    if blob[:2] != b"X\n":
        raise SystemExit(f"{path}: not an XDR-serialised R object")
    (version,) = struct.unpack(">i", blob[2:6])
    pos = 14
    if version == 3:  # native encoding name follows
        (n,) = struct.unpack(">i", blob[pos:pos + 4])
        pos += 4 + n
    flags, length = struct.unpack(">ii", blob[pos:pos + 8])
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        raise SystemExit(f"{path}: expected a character vector, found R type {flags & 0xFF}")
    lines = []
    for _ in range(length):
        _, n = struct.unpack(">ii", blob[pos:pos + 8])
        pos += 8
        if n < 0:  # NA_character_
            lines.append("")
            continue
        lines.append(blob[pos:pos + n].decode("utf-8"))
        pos += n
    return lines


CHAPTER = re.compile(r"^\s*chapter\s+([0-9]+|[ivxlc]+)\.?\s*$", re.IGNORECASE)
END = re.compile(r"^\s*(the end|finis|a note on the text)\s*$", re.IGNORECASE)
VOLUME = re.compile(r"^\s*volume\s+[ivx0-9]+\s*$", re.IGNORECASE)


def chapters_of(lines):
    """[(chapter number, [paragraph, ...]), ...] of one novel."""
    chapters, paragraph, current = [], [], None

    def flush():
        if paragraph and current is not None:
            current.append(" ".join(paragraph))
        paragraph.clear()

    for line in lines:
        if END.match(line):
            break
        if CHAPTER.match(line):
            flush()
            current = []
            chapters.append(current)
            continue
        if VOLUME.match(line):
            flush()
            continue
        if line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return [(k + 1, paras) for k, paras in enumerate(chapters) if paras]


CLITIC = re.compile(r"^(.+?)('s|'S|'ll|'re|'ve|'d|'m)$")
OPENERS = "\"'([{"
CLOSERS = "\"')]}.,;:!?*"


def split_word(word):
    """One whitespace-separated chunk -> WikiText tokens."""
    if not word:
        return []
    lead, trail = [], []
    while word and word[0] in OPENERS:
        lead.append(word[0])
        word = word[1:]
    while word and word[-1] in CLOSERS and word not in ABBREVIATIONS:
        trail.insert(0, word[-1])
        word = word[:-1]
    middle = []
    if word:
        # Punctuation glued between words ("well,--so" or "yes;and").
        parts = re.split(r"([,;:!?\"()])", word)
        if len(parts) > 1:
            for part in parts:
                middle.extend(split_word(part) if len(part) > 1 or part.isalnum() else [part] if part else [])
        else:
            middle = split_core(word)
    return lead + middle + trail


def split_core(word):
    low = word.lower()
    if low.endswith("n't") and len(word) > 3:
        return split_core(word[:-3]) + [word[-3:]]
    m = CLITIC.match(word)
    if m:
        return split_core(m.group(1)) + [m.group(2)]
    word = re.sub(r"(?<=\d),(?=\d)", " @,@ ", word)
    word = re.sub(r"(?<=\d)\.(?=\d)", " @.@ ", word)
    word = re.sub(r"(?<=\w)-(?=\w)", " @-@ ", word)
    word = re.sub(r"(?<=\w)\.(?=[A-Za-z])", " . ", word)  # "end.The" typos
    return word.split()


def tokenize(paragraph):
    text = paragraph.replace("_", "").replace("--", " \u2014 ")
    tokens = []
    for chunk in text.split():
        tokens.extend(split_word(chunk))
    return tokens


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: make_corpus.py RDATA_RDB OUT_DIR")
    rdb, out_dir = sys.argv[1], sys.argv[2]
    novels = []
    for lines in read_rdb(rdb):
        title = next((TITLES[l.strip().upper()] for l in lines[:3] if l.strip().upper() in TITLES), None)
        if title is None:
            raise SystemExit(f"{rdb}: a text whose first lines name no known novel: {lines[:3]}")
        novels.append((title, chapters_of(lines)))
    novels.sort()
    if len(novels) != 6:
        raise SystemExit(f"{rdb}: expected the six novels, found {len(novels)}")

    def split_of(k):
        return "valid" if k % 20 == 10 else "test" if k % 20 == 0 else "train"

    # split -> [line tokens or None for a blank line]
    docs = {"train": [], "valid": [], "test": []}
    for title, chapters in novels:
        for split in docs:
            picked = [(k, p) for k, p in chapters if split_of(k) == split]
            if not picked:
                continue
            lines = docs[split]
            lines += [None, ["="] + title.split() + ["="], None]
            for k, paragraphs in picked:
                lines += [None, ["=", "=", "Chapter", str(k), "=", "="], None]
                lines += [tokenize(p) for p in paragraphs]
    for split, lines in docs.items():  # one blank line between blocks, as WikiText
        docs[split] = [l for i, l in enumerate(lines) if l is not None or i == 0 or lines[i - 1] is not None]
    counts = collections.Counter(t for line in docs["train"] if line for t in line)
    keep = {t for t, c in counts.items() if c >= MIN_COUNT}
    os.makedirs(out_dir, exist_ok=True)
    for split, lines in docs.items():
        path = os.path.join(out_dir, f"wiki.{split}.tokens")
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                if line is None:
                    f.write(" \n")
                else:
                    f.write(" " + " ".join(t if t in keep else "<unk>" for t in line) + " \n")
        os.replace(tmp, path)
        n = sum(len(l) + 1 for l in lines if l) + sum(1 for l in lines if l is None)
        print(f"{path}: {len(lines)} lines, {n} tokens with <eos>")
    print(f"vocabulary: {len(keep) + 2} types (incl. <unk> and <eos>), "
          f"{len(counts) - len(keep)} rare training types mapped to <unk>")


if __name__ == "__main__":
    main()
