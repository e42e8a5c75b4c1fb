//! Request bodies, written byte by byte rather than through serde, so they
//! can do what serde never would: repeat a key, carry a number no type can
//! hold, nest past any parser's limit, stop half-way, or hold bytes that are
//! not UTF-8. Most are close to what the route expects, so the cases get
//! past the first check and reach the ones behind it.

use fastrand::Rng;

use super::generate::{UNICODE, alnum_in, chance, pick};

/// JSON escapes, valid and not: controls, lone surrogates, a broken pair.
const ESCAPES: &[&str] = &[
    "\\u0000",
    "\\n",
    "\\t",
    "\\\"",
    "\\\\",
    "\\/",
    "\\ud800",
    "\\udfff",
    "\\ud83d\\ude00",
    "\\u00e9",
    "\\uFFFF",
    "\\ud83d\\u0041",
    "\\x41",
    "\\u12",
    "\\",
    "\\u202e",
];

/// Numbers JSON allows and numbers it does not; sizes no integer type holds.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "1000",
    "1001",
    "-0",
    "0.5",
    "1.0",
    "1e3",
    "1E400",
    "-1e400",
    "1e-400",
    "4294967296",
    "4294967297",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1.7976931348623157e309",
    "01",
    "+1",
    ".5",
    "5.",
    "NaN",
    "Infinity",
    "-",
    "1e",
    "0x10",
];

fn ws(rng: &mut Rng, out: &mut Vec<u8>) {
    if chance(rng, 12) {
        let w = pick(rng, &[" ", "\n", "\t", "\r\n  ", "    "]);
        out.extend_from_slice(w.as_bytes());
    }
}

fn number(rng: &mut Rng, out: &mut Vec<u8>) {
    if chance(rng, 12) {
        if rng.bool() {
            out.push(b'-');
        }
        out.push(b'1' + rng.u8(0..9));
        let digits = rng.usize(20..3000);
        out.extend((0..digits).map(|_| b'0' + rng.u8(0..10)));
        if rng.bool() {
            out.extend_from_slice(format!("e{}", rng.i32(-9999..9999)).as_bytes());
        }
    } else {
        out.extend_from_slice(pick(rng, NUMBERS).as_bytes());
    }
}

fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    out.push(b'"');
    for _ in 0..rng.usize(0..5) {
        match rng.u8(0..12) {
            0..=3 => out.extend_from_slice(alnum_in(rng, 1..12).as_bytes()),
            4 | 5 => out.extend_from_slice(pick(rng, UNICODE).as_bytes()),
            6 => out.extend_from_slice(pick(rng, ESCAPES).as_bytes()),
            // Raw bytes JSON or UTF-8 forbid: a control, a lone
            // continuation byte, an encoded surrogate, 0xFF.
            7 if chance(rng, 25) => {
                let raw: &[u8] = pick(
                    rng,
                    &[
                        &b"\x01"[..],
                        b"\x1f",
                        b"\xff",
                        b"\xc3",
                        b"\x80",
                        b"\xed\xa0\x80",
                    ],
                );
                out.extend_from_slice(raw);
            }
            8 => {
                let unit = pick(rng, &["a", "é", "🛒", " ", "\\n"]);
                out.extend_from_slice(unit.repeat(rng.usize(50..3000)).as_bytes());
            }
            9 => out.extend_from_slice(b" \t"),
            _ => out.extend_from_slice(rng.u32(..).to_string().as_bytes()),
        }
    }
    out.push(b'"');
}

/// Any JSON value, nesting at most a few levels.
fn value(rng: &mut Rng, out: &mut Vec<u8>, depth: u8) {
    let kinds = if depth >= 4 { 5 } else { 9 };
    match rng.u8(0..kinds) {
        0 => out.extend_from_slice(b"null"),
        1 => out.extend_from_slice(if rng.bool() { b"true" } else { b"false" }),
        2 => number(rng, out),
        3 | 4 => string(rng, out),
        5 | 6 => {
            out.push(b'[');
            for i in 0..rng.usize(0..5) {
                if i > 0 {
                    out.push(b',');
                }
                ws(rng, out);
                value(rng, out, depth + 1);
            }
            out.push(b']');
        }
        _ => {
            let members = (0..rng.usize(0..5))
                .map(|_| {
                    let mut k = Vec::new();
                    string(rng, &mut k);
                    let mut v = Vec::new();
                    value(rng, &mut v, depth + 1);
                    (k, v)
                })
                .collect();
            object(rng, out, members);
        }
    }
}

fn quoted(s: &str) -> Vec<u8> {
    format!("\"{s}\"").into_bytes()
}

/// An object from members, written by hand so that keys can repeat.
fn object(rng: &mut Rng, out: &mut Vec<u8>, members: Vec<(Vec<u8>, Vec<u8>)>) {
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        ws(rng, out);
        out.extend_from_slice(&k);
        ws(rng, out);
        out.push(b':');
        ws(rng, out);
        out.extend_from_slice(&v);
    }
    ws(rng, out);
    out.push(b'}');
}

/// An object that is almost what the route expects: each of `keys` usually
/// present with a good value (from `good`), sometimes missing, of the wrong
/// type, repeated, or joined by a key nobody asked for.
fn near_valid(
    rng: &mut Rng,
    out: &mut Vec<u8>,
    keys: &[&str],
    good: &mut dyn FnMut(&mut Rng, &str, &mut Vec<u8>),
) {
    let mut members = Vec::new();
    for key in keys {
        let roll = rng.u8(0..100);
        if roll < 10 {
            continue;
        }
        let mut v = Vec::new();
        if roll < 85 {
            good(rng, key, &mut v);
        } else {
            value(rng, &mut v, 2);
        }
        members.push((quoted(key), v));
        if chance(rng, 6) {
            let mut again = Vec::new();
            value(rng, &mut again, 2);
            members.push((quoted(key), again));
        }
    }
    if chance(rng, 10) {
        let key = pick(
            rng,
            &[
                "customer",
                "id",
                "status",
                "__proto__",
                "",
                "role",
                "ITEM",
                "quantity ",
            ],
        );
        let mut v = Vec::new();
        value(rng, &mut v, 2);
        members.push((quoted(key), v));
    }
    if chance(rng, 20) {
        rng.shuffle(&mut members);
    }
    object(rng, out, members);
}

fn item_name(rng: &mut Rng, out: &mut Vec<u8>) {
    if chance(rng, 80) {
        let word = pick(rng, &["laptop", "mouse", "keyboard", "monitor", "cable"]);
        out.extend_from_slice(quoted(word).as_slice());
    } else {
        string(rng, out);
    }
}

fn quantity(rng: &mut Rng, out: &mut Vec<u8>) {
    if chance(rng, 85) {
        out.extend_from_slice(rng.u32(1..=1000).to_string().as_bytes());
    } else {
        number(rng, out);
    }
}

fn order_line(rng: &mut Rng, out: &mut Vec<u8>) {
    near_valid(
        rng,
        out,
        &["item", "quantity"],
        &mut |rng, key, v| match key {
            "item" => item_name(rng, v),
            _ => quantity(rng, v),
        },
    );
}

fn line_list(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = match rng.u8(0..20) {
        0 => 0,
        1 => rng.usize(49..60),
        2 => rng.usize(100..400),
        _ => rng.usize(1..5),
    };
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        if chance(rng, 95) {
            order_line(rng, out);
        } else {
            value(rng, out, 3);
        }
    }
    out.push(b']');
}

pub(super) fn order_body(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.u8(0..40) {
        0..=11 => near_valid(
            rng,
            out,
            &["item", "quantity"],
            &mut |rng, key, v| match key {
                "item" => item_name(rng, v),
                _ => quantity(rng, v),
            },
        ),
        12..=17 => near_valid(rng, out, &["items"], &mut |rng, _, v| line_list(rng, v)),
        18..=19 => value(rng, out, 0),
        20..=21 => deep(rng, out),
        22..=23 => {
            order_line(rng, out);
            truncate(rng, out);
        }
        24..=26 => garbage(rng, out),
        27 => oversize(rng, out),
        _ => {
            let item = pick(rng, &["laptop", "mouse", "keyboard"]);
            let q = rng.u32(1..=5);
            out.extend_from_slice(format!(r#"{{"item":"{item}","quantity":{q}}}"#).as_bytes());
        }
    }
}

/// Login bodies. A well-formed one costs an argon2 hash, this test's
/// largest single cost, so they are a minority. alice always brings her
/// right password, exactly, so that her account never locks and logins keep
/// succeeding; bob brings a wrong one, which soon meets the per-account
/// limit (429). Every other name is unique to its case, so the limit, which
/// is not what is under test, rarely answers first.
pub(super) fn login_body(rng: &mut Rng, index: usize, out: &mut Vec<u8>) {
    match rng.u8(0..40) {
        0..=1 => {
            let mut members = vec![
                (quoted("username"), quoted("alice")),
                (quoted("password"), quoted("alice-secret")),
            ];
            rng.shuffle(&mut members);
            object(rng, out, members);
        }
        2 => out.extend_from_slice(br#"{"username":"bob","password":"not-bobs"}"#),
        _ => stranger_login(rng, index, out),
    }
}

/// A login by a name no account has, unique to the case.
fn stranger_login(rng: &mut Rng, index: usize, out: &mut Vec<u8>) {
    let password = alnum_in(rng, 8..30);
    match rng.u8(0..20) {
        0..=7 => near_valid(
            rng,
            out,
            &["username", "password"],
            &mut |rng, key, v| match (key, rng.u8(0..20)) {
                ("username", 0..=3) => string(rng, v),
                ("username", _) => v.extend_from_slice(&quoted(&format!("fz{index}"))),
                (_, 0..=4) => string(rng, v),
                (_, _) => v.extend_from_slice(&quoted(&password)),
            },
        ),
        8..=9 => value(rng, out, 0),
        10..=11 => deep(rng, out),
        12..=13 => {
            out.extend_from_slice(
                format!(r#"{{"username":"fz{index}","password":"pw-{index}-xx"}}"#).as_bytes(),
            );
            truncate(rng, out);
        }
        14..=18 => garbage(rng, out),
        _ => oversize(rng, out),
    }
}

/// Nesting around serde_json's limit of 128, and far past it.
fn deep(rng: &mut Rng, out: &mut Vec<u8>) {
    let depth = match rng.u8(0..4) {
        0 => rng.usize(120..140),
        1 => rng.usize(1_000..5_000),
        2 => rng.usize(5_000..12_000),
        _ => rng.usize(1..120),
    };
    let (open, close): (&[u8], &[u8]) = match rng.u8(0..3) {
        0 => (b"[", b"]"),
        1 => (br#"{"item":"#, b"}"),
        _ => (br#"{"items":[{"a":"#, b"}]}"),
    };
    let balanced = chance(rng, 80);
    for _ in 0..depth {
        out.extend_from_slice(open);
    }
    out.extend_from_slice(b"1");
    if balanced {
        for _ in 0..depth {
            out.extend_from_slice(close);
        }
    }
}

fn truncate(rng: &mut Rng, out: &mut Vec<u8>) {
    let keep = rng.usize(..out.len().max(1));
    out.truncate(keep);
}

fn garbage(rng: &mut Rng, out: &mut Vec<u8>) {
    let fixed: &[&[u8]] = &[
        b"",
        b"   ",
        b"null",
        b"[]",
        b"{}",
        b"\"laptop\"",
        b"item=laptop&quantity=1",
        b"{'item':'laptop'}",
        b"{\"item\":\"laptop\"} trailing",
        b"{}{}",
        b"/* c */{\"item\":\"laptop\"}",
        b"\xef\xbb\xbf{\"item\":\"laptop\"}",
        b"{\"item\":\"laptop\",}",
        b"{\"item\" \"laptop\"}",
        b"\0\0\0\0",
        b"{\"item\":\"lap\0top\"}",
        b"<order><item>laptop</item></order>",
    ];
    if chance(rng, 70) {
        out.extend_from_slice(pick(rng, fixed));
    } else {
        out.extend((0..rng.usize(1..300)).map(|_| rng.u8(..)));
    }
}

/// Bodies either side of the 64 KiB limit.
fn oversize(rng: &mut Rng, out: &mut Vec<u8>) {
    let limit = cloudmart_http::error::BODY_LIMIT_BYTES;
    let over = limit + rng.usize(2..8_000);
    let size = pick(rng, &[limit - 1, limit, limit + 1, over]);
    let frame = br#"{"item":""}"#.len();
    out.extend_from_slice(br#"{"item":""#);
    out.extend(std::iter::repeat_n(b'a', size - frame));
    out.extend_from_slice(br#""}"#);
}
