"""What the zeep checks share: one line per check, the WSDL's schemas as an lxml validator (zeep
alone does not enforce required elements), and zeep clients built strictly from a WSDL."""

import re

from lxml import etree
import zeep

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def schema_validator(wsdl_path):
    """The WSDL's schemas as one lxml validator. Worked on as text, so that namespace
    declarations that only QName values use (xmlns:q4 on one element) survive."""
    text = open(wsdl_path, encoding="utf-8").read()
    root = etree.fromstring(text.encode())
    decls = " ".join(f'xmlns:{k}="{v}"' for k, v in root.nsmap.items() if k)
    docs, main = {}, None
    for m in re.finditer(r"<s:schema\b([^>]*)>(.*?)</s:schema>", text, re.S):
        attrs, inner = m.group(1), m.group(2)
        ns = re.search(r'targetNamespace="([^"]+)"', attrs).group(1)
        url = f"mem://{len(docs)}.xsd"
        # The published name has a leading space (" ClientBehaviors").
        inner = inner.replace('name=" ClientBehaviors"', 'name="ClientBehaviors"')
        docs[ns] = (url, f"<s:schema {decls}{attrs}>{inner}</s:schema>")
        if ns == root.get("targetNamespace"):
            main = ns
    located = {}
    for ns, (url, doc) in docs.items():
        for other, (other_url, _) in docs.items():
            doc = doc.replace(f'<s:import namespace="{other}" />', f'<s:import namespace="{other}" schemaLocation="{other_url}" />')
            doc = doc.replace(f'<s:import namespace="{other}"/>', f'<s:import namespace="{other}" schemaLocation="{other_url}"/>')
        located[url] = doc.encode()

    class Resolver(etree.Resolver):
        def resolve(self, url, pubid, context):
            if url in located:
                return self.resolve_string(located[url], context)
            return None

    parser = etree.XMLParser()
    parser.resolvers.add(Resolver())
    return etree.XMLSchema(etree.fromstring(located[docs[main][0]], parser))


def validate(name, validator, history):
    """The last response's Body payload, validated against the schema."""
    envelope = history.last_received["envelope"]
    body = envelope.find(f"{{{SOAP11}}}Body")
    payload = body[0]
    ok = validator.validate(payload)
    check(f"{name} answer is schema-valid", ok, str(validator.error_log.last_error))


def service(base, wsdl_dir, wsdl, binding, path, history):
    """A zeep client of one WSDL, its service bound to `base` + `path`."""
    settings = zeep.Settings(strict=True, xml_huge_tree=True)
    client = zeep.Client(f"{wsdl_dir}/{wsdl}", settings=settings, plugins=[history])
    ns = etree.parse(f"{wsdl_dir}/{wsdl}").getroot().get("targetNamespace")
    return client, client.create_service(f"{{{ns}}}{binding}", f"{base}{path}")


