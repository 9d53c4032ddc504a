//! JSON bodies with their field order kept (serde_json's `Value` sorts keys; a struct read from
//! an array takes its fields in declaration order), and the strategies every JSON endpoint
//! gets: its valid body broken in each of the ways below.

use crate::JSON_CASES;
use crate::harness::{Case, Endpoint, Expect, Service};
use crate::shared::{bytes, cases, chance, filler, method, pick, weighted};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::encoding::{b64_decode, b64_encode};
use serde_json::{Value, json};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// JSON with its field order kept.

#[derive(Clone, Debug)]
pub enum J {
    Leaf(Value),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Arr,
    Obj,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.ws();
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn string(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        serde_json::from_slice(&self.s[start..self.i]).expect("string")
    }

    fn value(&mut self) -> J {
        match self.peek() {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                while self.peek() != b'}' {
                    let key = self.string();
                    assert_eq!(self.peek(), b':');
                    self.i += 1;
                    fields.push((key, self.value()));
                    if self.peek() == b',' {
                        self.i += 1;
                    }
                }
                self.i += 1;
                J::Obj(fields)
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                while self.peek() != b']' {
                    items.push(self.value());
                    if self.peek() == b',' {
                        self.i += 1;
                    }
                }
                self.i += 1;
                J::Arr(items)
            }
            b'"' => J::Leaf(Value::String(self.string())),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && !b",]} \n\r\t".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                J::Leaf(serde_json::from_slice(&self.s[start..self.i]).expect("scalar"))
            }
        }
    }
}

impl J {
    pub fn parse(text: &str) -> J {
        Parser {
            s: text.as_bytes(),
            i: 0,
        }
        .value()
    }

    pub fn text(&self) -> String {
        match self {
            J::Leaf(v) => v.to_string(),
            J::Arr(items) => format!(
                "[{}]",
                items.iter().map(J::text).collect::<Vec<_>>().join(",")
            ),
            J::Obj(fields) => format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v.text()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            J::Leaf(Value::Null) => Kind::Null,
            J::Leaf(Value::Bool(_)) => Kind::Bool,
            J::Leaf(Value::Number(_)) => Kind::Num,
            J::Leaf(Value::String(_)) => Kind::Str,
            J::Leaf(Value::Array(_)) | J::Arr(_) => Kind::Arr,
            J::Leaf(Value::Object(_)) | J::Obj(_) => Kind::Obj,
        }
    }

    /// Every node's path (indices into objects' field lists and arrays), root first.
    pub fn paths(&self) -> Vec<Vec<usize>> {
        fn walk(j: &J, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            out.push(path.clone());
            let children: Vec<&J> = match j {
                J::Leaf(_) => Vec::new(),
                J::Arr(items) => items.iter().collect(),
                J::Obj(fields) => fields.iter().map(|(_, v)| v).collect(),
            };
            for (i, child) in children.into_iter().enumerate() {
                path.push(i);
                walk(child, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    pub fn at(&self, path: &[usize]) -> &J {
        path.iter().fold(self, |j, &i| match j {
            J::Arr(items) => &items[i],
            J::Obj(fields) => &fields[i].1,
            J::Leaf(_) => j,
        })
    }

    pub fn at_mut(&mut self, path: &[usize]) -> &mut J {
        let mut j = self;
        for &i in path {
            j = match j {
                J::Arr(items) => &mut items[i],
                J::Obj(fields) => &mut fields[i].1,
                J::Leaf(_) => return j,
            };
        }
        j
    }

    pub fn describe(&self, path: &[usize]) -> String {
        let mut out = String::from("$");
        let mut j = self;
        for &i in path {
            match j {
                J::Arr(items) => {
                    out.push_str(&format!("[{i}]"));
                    j = &items[i];
                }
                J::Obj(fields) => {
                    out.push_str(&format!(".{}", fields[i].0));
                    j = &fields[i].1;
                }
                J::Leaf(_) => {}
            }
        }
        out
    }

    pub fn str_value(&self) -> Option<&str> {
        match self {
            J::Leaf(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A value of another JSON type than `kind`: `choice` picks among them; numbers due may be
/// given as text (`as_text`) that no integer field accepts.
fn wrong_typed(kind: Kind, choice: Index, as_text: bool, text: &str) -> J {
    let candidates: Vec<(Kind, Value)> = vec![
        (Kind::Null, Value::Null),
        (Kind::Bool, json!(true)),
        (Kind::Bool, json!(false)),
        (Kind::Num, json!(0)),
        (Kind::Num, json!(-1)),
        (Kind::Num, json!(1.5)),
        (Kind::Num, json!(u64::MAX)),
        (Kind::Str, json!("")),
        (Kind::Str, json!("x")),
        (Kind::Str, json!("1")),
        (Kind::Arr, json!([])),
        (Kind::Arr, json!([1, "a"])),
        (Kind::Obj, json!({})),
        (Kind::Obj, json!({"a": 1})),
    ];
    let others: Vec<&(Kind, Value)> = candidates.iter().filter(|(k, _)| *k != kind).collect();
    let (_, v) = choice.get(&others);
    // Numbers as text: u64::MAX + 1 and a float where an integer is due.
    if kind == Kind::Num && as_text {
        return J::Leaf(serde_json::from_str(text).expect("number"));
    }
    J::Leaf((*v).clone())
}

fn random_leaf() -> impl Strategy<Value = Value> {
    pick(&[
        Value::Null,
        json!(1),
        json!("x"),
        json!(true),
        json!([]),
        json!({}),
        json!({"nested": [1, 2]}),
    ])
}

// ---------------------------------------------------------------------------------------------
// Generators shared by the JSON endpoints.

/// A JSON endpoint: its valid body (never sent as is) and a well-formed body it refuses on its
/// merits (the base of the "object as array" cases).
pub struct JsonTarget {
    pub path: &'static str,
    pub limit: usize,
    pub valid: String,
    pub refused: String,
}

const WRONG_CONTENT_TYPES: &[&str] = &[
    "",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/xml",
    "application/",
    "json",
    "application/jsonx",
    "*/*",
];

const BAD_UTF8: &[&[u8]] = &[
    &[0xff],
    &[0xfe, 0xff],
    &[0xc3, 0x28],
    &[0xed, 0xa0, 0x80],
    &[0xc0, 0xaf],
    &[0xf8, 0x88, 0x80, 0x80, 0x80],
    &[0x80],
];

const BROKEN_JSON: &[&str] = &[
    "{",
    "}",
    "{\"a\":}",
    "{\"a\" 1}",
    "{'a':1}",
    "{a:1}",
    "[1,]",
    "{\"a\":1,}",
    "NaN",
    "Infinity",
    "-",
    "01",
    "\"unterminated",
    "{\"a\":\"\\u12\"}",
    "{\"a\":\"\\x\"}",
    "\u{feff}{}",
    "/* c */ {}",
    "   ",
    "",
    "{\"a\":1}{\"b\":2}",
    "tru",
    "nul",
];

fn post(path: &'static str, family: &'static str, detail: String, body: Vec<u8>) -> Case {
    Case::new(family, detail, Method::POST, path).json_body(body)
}

/// [`post`] with `j` as the body.
fn post_j(path: &'static str, family: &'static str, detail: String, j: &J) -> Case {
    post(path, family, detail, j.text().into_bytes())
}

/// Paths of the nodes of `j` that `keep` accepts.
fn paths_where(j: &J, keep: impl Fn(&[usize]) -> bool) -> Vec<Vec<usize>> {
    j.paths().into_iter().filter(|p| keep(p)).collect()
}

/// A JSON endpoint of `service`: the `once` cases, one case of each `semantic` strategy
/// (well-formed requests it must refuse on their merits), and then `JSON_CASES` in all, three
/// in ten from the `semantic` ones by their weights and the rest from [`generic_json`].
pub fn json_endpoint(
    service: Service,
    base: &str,
    mut once: Vec<SBoxedStrategy<Case>>,
    semantic: Vec<(u32, SBoxedStrategy<Case>)>,
    target: JsonTarget,
) -> Endpoint {
    once.extend(semantic.iter().map(|(_, s)| s.clone()));
    let name = format!("POST {}", target.path);
    let limit = target.limit;
    let strategy = cases(vec![(3, cases(semantic)), (7, generic_json(target))]);
    Endpoint::new(service, &name, base, limit, once, strategy, JSON_CASES)
}

/// The valid body of `t` broken in one of many ways, each family as often as its weight.
pub fn generic_json(t: JsonTarget) -> SBoxedStrategy<Case> {
    let path = t.path;
    let limit = t.limit;
    let text: Arc<str> = t.valid.clone().into();
    let valid = Arc::new(J::parse(&t.valid));
    let refused = Arc::new(J::parse(&t.refused));
    let strings = paths_where(&valid, |p| valid.at(p).kind() == Kind::Str);
    let mut families: Vec<(u32, SBoxedStrategy<Case>)> = Vec::new();

    families.push((
        8,
        bytes(256)
            .prop_map(move |b| post(path, "random bytes", format!("{} random bytes", b.len()), b))
            .sboxed(),
    ));

    let v = valid.clone();
    families.push((
        6,
        (pick(&strings), pick(BAD_UTF8))
            .prop_map(move |(at, bad)| {
                let mut j = (*v).clone();
                let marker = "\u{1}MARK\u{1}";
                *j.at_mut(&at) = J::Leaf(Value::String(marker.into()));
                let text = j.text();
                let marker_json = serde_json::to_string(marker).expect("json");
                let cut = text.find(&marker_json).expect("marker") + 1;
                let mut body = text.as_bytes()[..cut].to_vec();
                body.extend_from_slice(bad);
                body.extend_from_slice(&text.as_bytes()[cut + marker_json.len() - 2..]);
                post(
                    path,
                    "non-utf8",
                    format!("bytes {bad:02x?} in {}", v.describe(&at)),
                    body,
                )
            })
            .sboxed(),
    ));

    let (t1, t2, t3) = (text.clone(), text.clone(), text.clone());
    let invalid: SBoxedStrategy<(String, Vec<u8>)> = weighted(vec![
        (
            1,
            (0..text.len())
                .prop_map(move |n| (format!("cut after {n} bytes"), t1.as_bytes()[..n].to_vec()))
                .sboxed(),
        ),
        (
            1,
            pick(&["x", ",", "}", "]", "{}", "\u{0}", "// c", "null"])
                .prop_map(move |tail| {
                    (
                        format!("trailing {tail:?}"),
                        [t2.as_bytes(), tail.as_bytes()].concat(),
                    )
                })
                .sboxed(),
        ),
        (
            1,
            Just(())
                .prop_map(move |()| ("first byte dropped".into(), t3.as_bytes()[1..].to_vec()))
                .sboxed(),
        ),
        (
            1,
            (pick(BROKEN_JSON), chance(0.1))
                .prop_map(|(fixed, deep)| {
                    // Nesting deeper than the parser's recursion limit.
                    let s = if deep {
                        format!("{}{}", "[".repeat(300), "]".repeat(300))
                    } else {
                        fixed.to_string()
                    };
                    (format!("{s:.60?}"), s.into_bytes())
                })
                .sboxed(),
        ),
    ]);
    families.push((
        10,
        invalid
            .prop_map(move |(detail, body)| post(path, "invalid json", detail, body))
            .sboxed(),
    ));

    let t4 = text.clone();
    families.push((
        6,
        (
            pick(&[
                "0", "-1", "1.5", "1e999", "\"text\"", "\"\"", "true", "null", "[]", "[null]",
                "{}", "[[]]",
            ]),
            chance(0.2),
        )
            .prop_map(move |(s, wrapped)| {
                let body = if wrapped {
                    format!("[{t4}]")
                } else {
                    s.to_owned()
                };
                post(
                    path,
                    "wrong top-level type",
                    format!("{body:.60}"),
                    body.into_bytes(),
                )
            })
            .sboxed(),
    ));

    let in_objects = paths_where(&valid, |p| {
        p.split_last()
            .is_some_and(|(_, parent)| valid.at(parent).kind() == Kind::Obj)
    });
    let v = valid.clone();
    families.push((
        12,
        pick(&in_objects)
            .prop_map(move |at| {
                let detail = format!("without {}", v.describe(&at));
                let (last, parent) = at.split_last().expect("path");
                let mut j = (*v).clone();
                if let J::Obj(fields) = j.at_mut(parent) {
                    fields.remove(*last);
                }
                post_j(path, "field removed", detail, &j)
            })
            .sboxed(),
    ));

    let objects = paths_where(&valid, |p| matches!(valid.at(p), J::Obj(_)));
    let v = valid.clone();
    families.push((
        10,
        (
            pick(&objects),
            0..4u8,
            0..1000u32,
            random_leaf(),
            any::<Index>(),
        )
            .prop_map(move |(at, how, n, value, position)| {
                let mut j = (*v).clone();
                let name = match how {
                    0 => String::new(),
                    1 => format!("x{n}"),
                    2 => "extra".into(),
                    // An existing name in another case.
                    _ => match j.at(&at) {
                        J::Obj(fields) => fields
                            .first()
                            .map(|(k, _)| k.to_uppercase())
                            .unwrap_or_else(|| "X".into()),
                        _ => "X".into(),
                    },
                };
                if let J::Obj(fields) = j.at_mut(&at) {
                    let i = position.index(fields.len() + 1);
                    fields.insert(i, (name.clone(), J::Leaf(value.clone())));
                }
                post_j(
                    path,
                    "extra field",
                    format!("{}.{name:?} = {value}", v.describe(&at)),
                    &j,
                )
            })
            .sboxed(),
    ));

    let below_root = valid.paths()[1..].to_vec();
    let v = valid.clone();
    families.push((
        14,
        (
            pick(&below_root),
            any::<Index>(),
            chance(0.3),
            pick(&["18446744073709551616", "1e3", "2.0"]),
        )
            .prop_map(move |(at, choice, as_text, number)| {
                let replacement = wrong_typed(v.at(&at).kind(), choice, as_text, number);
                let detail = format!("{} = {}", v.describe(&at), replacement.text());
                let mut j = (*v).clone();
                *j.at_mut(&at) = replacement;
                post_j(path, "wrong type", detail, &j)
            })
            .sboxed(),
    ));

    let binary = paths_where(&valid, |p| {
        valid
            .at(p)
            .str_value()
            .and_then(|s| b64_decode(s).ok())
            .is_some_and(|b| b.len() >= 16)
    });
    if !binary.is_empty() {
        let v = valid.clone();
        let v2 = valid.clone();
        families.push((
            10,
            pick(&binary)
                .prop_flat_map(move |at| {
                    let text = v.at(&at).str_value().expect("string").to_owned();
                    bad_base64(&text).prop_map(move |(how, new)| (at.clone(), how, new))
                })
                .prop_filter("a re-encoding of the same bytes", move |(at, _, new)| {
                    let old = b64_decode(v2.at(at).str_value().expect("string")).expect("b64");
                    !b64_decode(new).is_ok_and(|b| b == old)
                })
                .prop_map({
                    let v = valid.clone();
                    move |(at, how, new)| {
                        let mut j = (*v).clone();
                        *j.at_mut(&at) = J::Leaf(Value::String(new));
                        post_j(path, "bad base64", format!("{} {how}", v.describe(&at)), &j)
                    }
                })
                .sboxed(),
        ));
    }

    let refused_objects = paths_where(
        &refused,
        |p| matches!(refused.at(p), J::Obj(f) if !f.is_empty()),
    );
    let r = refused.clone();
    families.push((
        6,
        pick(&refused_objects)
            .prop_map(move |at| {
                let mut j = (*r).clone();
                let node = j.at_mut(&at);
                if let J::Obj(fields) = node {
                    *node = J::Arr(fields.drain(..).map(|(_, v)| v).collect());
                }
                let mut c = post_j(
                    path,
                    "object as array",
                    format!("{} as the array of its values", r.describe(&at)),
                    &j,
                );
                c.parse_error = true;
                c
            })
            .sboxed(),
    ));

    if let J::Obj(fields) = &*valid {
        let fields = fields.clone();
        let t5 = text.clone();
        families.push((
            3,
            (0..fields.len())
                .prop_map(move |i| {
                    let (k, v) = &fields[i];
                    let body = format!("{{{}:{},{}", Value::String(k.clone()), v.text(), &t5[1..]);
                    post(
                        path,
                        "duplicate key",
                        format!("{k:?} twice"),
                        body.into_bytes(),
                    )
                })
                .sboxed(),
        ));
    }

    let v = valid.clone();
    families.push((
        3,
        (
            pick(&strings),
            chance(0.5),
            1..4096usize,
            pick(&["A", "é", "\\u0000", " "]),
        )
            .prop_map(move |(at, half, extra, filler)| {
                let n = if half { limit / 2 } else { limit + extra };
                let mut j = (*v).clone();
                let marker = "\u{2}HUGE\u{2}";
                *j.at_mut(&at) = J::Leaf(Value::String(marker.into()));
                let marker_json = serde_json::to_string(marker).expect("json");
                let body = j.text().replacen(
                    &marker_json,
                    &format!("\"{}\"", filler.repeat(n / filler.len())),
                    1,
                );
                post(
                    path,
                    "huge string",
                    format!("{} of {n} bytes of {filler:?}", v.describe(&at)),
                    body.into_bytes(),
                )
                .sized(limit)
            })
            .sboxed(),
    ));

    let arrays = paths_where(&valid, |p| matches!(valid.at(p), J::Arr(_)));
    let huge_array = if arrays.is_empty() {
        // No arrays here: an array as the whole body.
        (0..limit)
            .prop_map(move |extra| {
                let n = limit / 2 + extra;
                let body = format!("[{}0]", "0,".repeat(n / 2));
                post(
                    path,
                    "huge array",
                    format!("top-level array of {} zeros", n / 2 + 1),
                    body.into_bytes(),
                )
                .sized(limit)
            })
            .sboxed()
    } else {
        let v = valid.clone();
        (pick(&arrays), chance(0.5))
            .prop_map(move |(at, half)| {
                let mut j = (*v).clone();
                let element = match j.at(&at) {
                    J::Arr(items) if !items.is_empty() => items[0].clone(),
                    _ => J::Leaf(json!(0)),
                };
                let size = element.text().len() + 1;
                let target = if half { limit / 2 } else { limit + 1024 };
                let n = target / size + 1;
                *j.at_mut(&at) = J::Arr(vec![element; n]);
                post_j(
                    path,
                    "huge array",
                    format!("{} with {n} elements", v.describe(&at)),
                    &j,
                )
                .sized(limit)
            })
            .sboxed()
    };
    families.push((2, huge_array));

    let t6 = text.clone();
    families.push((
        2,
        (1..2048usize, 0..3u8, any::<u64>())
            .prop_map(move |(extra, how, seed)| {
                let over = limit + extra;
                let (detail, body) = match how {
                    0 => (
                        "valid body padded with spaces",
                        format!("{t6}{}", " ".repeat(over - t6.len())).into_bytes(),
                    ),
                    1 => ("brackets", vec![b'['; over]),
                    _ => ("random bytes", filler(seed, over)),
                };
                post(
                    path,
                    "oversized body",
                    format!("{detail}, {over} bytes"),
                    body,
                )
                .expect(Expect::Status(413))
            })
            .sboxed(),
    ));

    let t7 = text.clone();
    families.push((
        8,
        pick(WRONG_CONTENT_TYPES)
            .prop_map(move |ct| {
                let mut c = Case::new(
                    "content type",
                    format!("valid body as {ct:?}"),
                    Method::POST,
                    path,
                )
                .body(t7.as_bytes().to_vec());
                if !ct.is_empty() {
                    c = c.header("content-type", ct);
                }
                c
            })
            .sboxed(),
    ));

    let t8 = text.clone();
    families.push((
        4,
        pick(&["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
            .prop_map(move |m| {
                let mut c = Case::new(
                    "wrong method",
                    format!("{m} with the valid body"),
                    method(m),
                    path,
                )
                .json_body(t8.as_bytes().to_vec())
                .expect(Expect::Status(405));
                c.json = m != "HEAD";
                c
            })
            .sboxed(),
    ));
    cases(families)
}

/// Ways to break the base64url `text` of some bytes: how, and the new text.
fn bad_base64(text: &str) -> SBoxedStrategy<(String, String)> {
    let bytes = b64_decode(text).expect("b64");
    let text: Arc<str> = text.into();
    let (t0, t1, t2, t4, t5) = (
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
    );
    let n = bytes.len();
    weighted(vec![
        (
            1,
            (
                pick(&["!", "*", "=", "+", "/", " ", ".", "é", "\n", "%"]),
                any::<Index>(),
            )
                .prop_map(move |(c, at)| {
                    let at = at.index(t0.len() + 1);
                    (
                        format!("{c:?} inserted"),
                        format!("{}{c}{}", &t0[..at], &t0[at..]),
                    )
                })
                .sboxed(),
        ),
        (
            1,
            pick(&["=", "=="])
                .prop_map(move |pad| ("padded".into(), format!("{t1}{pad}")))
                .sboxed(),
        ),
        (
            1,
            Just(())
                .prop_map(move |()| {
                    (
                        "standard alphabet".into(),
                        format!("+/{}", &t2[2..]).replace('-', "+"),
                    )
                })
                .sboxed(),
        ),
        (
            1,
            pick(&[0, 1, n - 1, n + 1, n * 2, n + 3])
                .prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len))
                .prop_map(|b| (format!("{} bytes", b.len()), b64_encode(&b)))
                .sboxed(),
        ),
        (
            1,
            Just(())
                .prop_map(move |()| ("one character short".into(), t4[..t4.len() - 1].to_owned()))
                .sboxed(),
        ),
        (
            1,
            Just(())
                .prop_map(move |()| {
                    // Unused low bits set in the last symbol: a non-canonical encoding.
                    let alphabet =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let last = t5.as_bytes()[t5.len() - 1];
                    let v = alphabet.iter().position(|&c| c == last).expect("symbol");
                    let unused = match n % 3 {
                        1 => 0b1111,
                        2 => 0b11,
                        _ => 0,
                    };
                    if unused == 0 {
                        ("standard padding char".into(), format!("{t5}="))
                    } else {
                        let bumped = char::from(alphabet[v ^ 1]);
                        (
                            "non-canonical last symbol".into(),
                            format!("{}{bumped}", &t5[..t5.len() - 1]),
                        )
                    }
                })
                .sboxed(),
        ),
    ])
}
