//! Shoal's replies in the checker's vocabulary: `SHOAL.PUT`, `SHOAL.DEL` and
//! `SHOAL.SIBLINGS` replies turned into dots, contexts and live siblings. The
//! engine writes a dot as `node:counter` and a context as `node:counter,...`.
//! Pure: no madsim.

use shoal_checker::{Context, Dot, Sibling};
use shoal_net::resp::Reply;

/// A `SHOAL.SIBLINGS` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiblingsReply {
    /// Siblings that hold a value, in reply order.
    pub live: Vec<Sibling>,
    /// Delete markers (siblings without a value).
    pub markers: usize,
    pub context: Context,
    /// The context exactly as the server wrote it, for a later `CONTEXT` argument.
    pub context_text: String,
}

impl SiblingsReply {
    /// The key exists (some sibling, live or a delete marker).
    pub fn exists(&self) -> bool {
        !self.live.is_empty() || self.markers > 0
    }
}

pub fn parse_dot(text: &str) -> Option<Dot> {
    let (node, counter) = text.split_once(':')?;
    Some(Dot::new(
        node.trim().parse().ok()?,
        counter.trim().parse().ok()?,
    ))
}

pub fn parse_context(text: &str) -> Option<Context> {
    let mut context = Context::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let dot = parse_dot(part)?;
        let entry = context.0.entry(dot.node).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }
    Some(context)
}

/// The text of a bulk, verbatim or simple reply.
pub(crate) fn text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Reply::Verbatim { text, .. } => Some(text.clone()),
        Reply::Simple(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[dot, superseded-context]` of a `SHOAL.PUT` (the dot is never nil for a put).
pub fn parse_put(reply: &Reply) -> Option<(Dot, Context)> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [dot, context] = items.as_slice() else {
        return None;
    };
    Some((parse_dot(&text(dot)?)?, parse_context(&text(context)?)?))
}

/// `[dot or nil, superseded-context]` of a `SHOAL.DEL`: the delete marker's dot
/// (nil when there was nothing live to delete) and the context it superseded.
pub fn parse_del(reply: &Reply) -> Option<(Option<Dot>, Context)> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [dot, context] = items.as_slice() else {
        return None;
    };
    let marker = match dot {
        Reply::Null => None,
        other => Some(parse_dot(&text(other)?)?),
    };
    Some((marker, parse_context(&text(context)?)?))
}

/// The context a delete removed for ever, as the history records it. A plain
/// delete (no `CONTEXT`) supersedes everything up to its marker, and the marker is
/// collected with the key's context later, so its dot counts as removed too (a read
/// after the collection no longer covers it, and the checker must count it as
/// observed). A delete with an explicit context may leave concurrent siblings
/// below its marker's counter, which a version vector cannot exclude: only its
/// superseded context is recorded.
pub fn removed_context(marker: Option<Dot>, superseded: Context, plain: bool) -> Context {
    let mut removed = superseded;
    if let (Some(marker), true) = (marker, plain) {
        removed.join(&Context::from_iter([(marker.node, marker.counter)]));
    }
    removed
}

/// `[context, [[dot, hlc, value-or-nil], ...]]` of a `SHOAL.SIBLINGS`.
pub fn parse_siblings(reply: &Reply) -> Option<SiblingsReply> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [context, siblings] = items.as_slice() else {
        return None;
    };
    let context_text = text(context)?;
    let Reply::Array(siblings) = siblings else {
        return None;
    };
    let mut parsed = SiblingsReply {
        live: Vec::new(),
        markers: 0,
        context: parse_context(&context_text)?,
        context_text,
    };
    for sibling in siblings {
        let Reply::Array(parts) = sibling else {
            return None;
        };
        let [dot, Reply::Integer(_hlc), value] = parts.as_slice() else {
            return None;
        };
        let dot = parse_dot(&text(dot)?)?;
        match value {
            Reply::Null => parsed.markers += 1,
            Reply::Bulk(bytes) => parsed.live.push(Sibling {
                value: String::from_utf8_lossy(bytes).into_owned(),
                dot,
            }),
            _ => return None,
        }
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::from(s.to_string()))
    }

    #[test]
    fn put_reply_parses() {
        let reply = Reply::Array(vec![bulk("1:4294967298"), bulk("1:4294967297,2:3")]);
        let (dot, context) = parse_put(&reply).expect("parses");
        assert_eq!(dot, Dot::new(1, 4294967298));
        assert_eq!(context.counter(1), 4294967297);
        assert_eq!(context.counter(2), 3);
    }

    #[test]
    fn delete_reply_with_nil_dot_parses() {
        let reply = Reply::Array(vec![Reply::Null, bulk("")]);
        assert_eq!(parse_del(&reply), Some((None, Context::new())));
    }

    #[test]
    fn only_a_plain_delete_removes_its_own_marker() {
        let reply = Reply::Array(vec![bulk("1:9"), bulk("1:7")]);
        let (marker, superseded) = parse_del(&reply).expect("parses");
        assert_eq!(marker, Some(Dot::new(1, 9)));
        assert!(removed_context(marker, superseded.clone(), true).covers(Dot::new(1, 9)));
        assert!(!removed_context(marker, superseded, false).covers(Dot::new(1, 8)));
    }

    #[test]
    fn siblings_reply_separates_markers() {
        let reply = Reply::Array(vec![
            bulk("1:5"),
            Reply::Array(vec![
                Reply::Array(vec![bulk("1:4"), Reply::Integer(7), bulk("v")]),
                Reply::Array(vec![bulk("1:5"), Reply::Integer(8), Reply::Null]),
            ]),
        ]);
        let parsed = parse_siblings(&reply).expect("parses");
        assert_eq!(parsed.live.len(), 1);
        assert_eq!(parsed.markers, 1);
        assert!(parsed.exists());
        assert_eq!(parsed.context_text, "1:5");
    }

    #[test]
    fn malformed_replies_are_refused() {
        assert_eq!(parse_put(&bulk("OK")), None);
        assert_eq!(parse_context("1:x"), None);
    }
}
