//! XML as sitemaps and the error answers of some gateways write it, read
//! as a stream by `quick-xml`: namespaces and prefixes, the predefined
//! entities, character references and CDATA mean what they mean to every
//! other XML reader. Streaming keeps memory at the input plus what is
//! kept of it (a tree of a 50 MB sitemap of small elements would take
//! fifteen times its size). A document type declaration is refused, so no
//! entity of a server's own making is ever expanded (billion laughs).

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// One element on the path from the root to where the reader is.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The local name, without a prefix.
    pub name: String,
    /// In the namespace the caller reads, or in none.
    pub ours: bool,
}

/// What `texts` found: the root element, and the text of each element
/// selected, in document order.
#[derive(Debug, Default)]
pub struct Found {
    pub root: Option<Element>,
    pub texts: Vec<String>,
}

/// Where the reader is: the path from the root, what was found so far,
/// and the element whose text is being collected (its depth, the text).
struct Walk<S> {
    select: S,
    path: Vec<Element>,
    found: Found,
    open: Option<(usize, String)>,
}

impl<S: Fn(&[Element]) -> bool> Walk<S> {
    fn enter(&mut self, name: &str, ours: bool) {
        self.path.push(Element {
            name: name.to_owned(),
            ours,
        });
        if self.found.root.is_none() {
            self.found.root = Some(self.path[0].clone());
        }
        if self.open.is_none() && (self.select)(&self.path) {
            self.open = Some((self.path.len(), String::new()));
        }
    }

    fn leave(&mut self) {
        let depth = self.path.len();
        if let Some((_, text)) = self.open.take_if(|(at, _)| *at == depth) {
            self.found.texts.push(text.trim().to_owned());
        }
        self.path.pop();
    }

    fn collect(&mut self, text: &str) {
        if let Some((_, so_far)) = &mut self.open {
            so_far.push_str(text);
        }
    }
}

/// Reads `xml` and returns the text (its character data, references and
/// CDATA, every piece within it, trimmed) of each element for which
/// `select(path)` holds, `path` running from the root to the element; at
/// most `limit` of them. `ns` is the namespace whose elements are `ours`.
pub fn texts(
    xml: &str,
    ns: &str,
    limit: usize,
    select: impl Fn(&[Element]) -> bool,
) -> Result<Found, String> {
    let mut reader = NsReader::from_str(xml);
    let mut walk = Walk {
        select,
        path: Vec::new(),
        found: Found::default(),
        open: None,
    };
    while walk.found.texts.len() < limit {
        let (ours, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(n), event)) => (n.0 == ns, event),
            Ok((ResolveResult::Unbound, event)) => (true, event),
            Ok((ResolveResult::Unknown(_), event)) => (false, event),
            Err(e) => {
                let at = reader.error_position();
                return Err(format!("not well-formed XML (byte {at}): {e}"));
            }
        };
        match event {
            Event::Start(e) => walk.enter(e.local_name().into_inner(), ours),
            Event::Empty(e) => {
                walk.enter(e.local_name().into_inner(), ours);
                walk.leave();
            }
            Event::End(_) => walk.leave(),
            Event::Text(t) => walk.collect(&t.xml10_content()),
            Event::CData(c) => walk.collect(&c.xml10_content()),
            Event::GeneralRef(r) => walk.collect(&reference(&r)?),
            Event::DocType(_) => {
                return Err("a document type declaration (DTD) is not accepted".to_owned())
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    match walk.path.last() {
        Some(e) if walk.found.texts.len() < limit => {
            Err(format!("the document ends inside <{}>", e.name))
        }
        _ if walk.found.root.is_none() => Err("no element at all".to_owned()),
        _ => Ok(walk.found),
    }
}

/// The text a character reference or a predefined entity stands for.
fn reference(r: &quick_xml::events::BytesRef) -> Result<String, String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Ok(c.to_string()),
        Ok(None) => quick_xml::escape::resolve_predefined_entity(r)
            .map(str::to_owned)
            .ok_or_else(|| format!("unknown entity &{};", &**r)),
        Err(e) => Err(format!("bad character reference &{};: {e}", &**r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &'static str) -> impl Fn(&[Element]) -> bool {
        move |path| path.last().is_some_and(|e| e.name == name)
    }

    #[test]
    fn references_cdata_and_nested_text_are_the_elements_text() {
        let xml = "<r xmlns:p='urn:p'><p:t> a &amp; &#x42;&#67; <![CDATA[<d>]]><i>e</i><!-- no --> </p:t><t/><t>2</t></r>";
        let found = texts(xml, "urn:p", usize::MAX, named("t")).unwrap();
        assert_eq!(found.texts, ["a & BC <d>e", "", "2"]);
        assert_eq!(
            found.root,
            Some(Element {
                name: "r".into(),
                ours: true
            })
        );
        let first = texts(xml, "urn:p", 1, |p| named("t")(p) && p[1].ours).unwrap();
        assert_eq!(first.texts, ["a & BC <d>e"]);
    }

    #[test]
    fn what_is_not_well_formed_or_brings_its_own_entities_is_refused() {
        for (xml, says) in [
            ("<r><t>x</r>", "not well-formed"),
            ("<r><t>&nbsp;</t></r>", "unknown entity &nbsp;"),
            ("<r>", "ends inside <r>"),
            ("", "no element"),
            ("<!DOCTYPE r [<!ENTITY a 'b'>]><r>&a;</r>", "DTD"),
        ] {
            let e = texts(xml, "", usize::MAX, named("t")).unwrap_err();
            assert!(e.contains(says), "{xml}: {e}");
        }
    }
}
