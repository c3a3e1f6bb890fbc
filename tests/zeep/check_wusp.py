#!/usr/bin/env python3
"""An independent SOAP stack against a running node: Python zeep, built from Microsoft's WSDLs,
calls every client-protocol operation and parses each answer strictly (element names, order,
types); every response body is also validated against the WSDL's XML schema with lxml, which
zeep alone does not do for required elements. Prints one line per check; exit 0 when all pass.

    check_wusp.py BASE_URL WSDL_DIR CLIENT_ID GROUP CAPTURE_DIR

Then the captured Windows 11 requests of CAPTURE_DIR are replayed (their cookies, issued by the
WSUS they were captured against, replaced by this node's) and every answer must be a schema-valid
success, as the real WSUS's was.

Run by tests/wusp_zeep.rs against a node it started, with a catalog and approvals in place.
"""

import datetime
import re
import sys
import urllib.error
import urllib.request
import uuid

from lxml import etree
import zeep
from zeep.plugins import HistoryPlugin

from wsdl_checks import SOAP11, check, failures, schema_validator, service as wsdl_service, validate

BASE, WSDL_DIR, CLIENT_ID, GROUP, CAPTURE_DIR = sys.argv[1:6]
XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
history = HistoryPlugin()


def service(wsdl, binding, path, history):
    return wsdl_service(BASE, WSDL_DIR, wsdl, binding, path, history)


auth_client, auth = service("wusp-SimpleAuthWebService.wsdl", "SimpleAuthSoap",
                            "/SimpleAuthWebService/SimpleAuth.asmx", history)
auth_schema = schema_validator(f"{WSDL_DIR}/wusp-SimpleAuthWebService.wsdl")
client_client, client = service("wusp-ClientWebService.patched.wsdl", "ClientSoap",
                                "/ClientWebService/client.asmx", history)
client_schema = schema_validator(f"{WSDL_DIR}/wusp-ClientWebService.patched.wsdl")
rep_client, reporting = service("wusp-ReportingWebService.wsdl", "WebServiceSoap",
                                "/ReportingWebService/ReportingWebService.asmx", history)
rep_schema = schema_validator(f"{WSDL_DIR}/wusp-ReportingWebService.wsdl")

config = client.GetConfig(protocolVersion="2.90")
validate("GetConfig", client_schema, history)
check("GetConfig names SimpleTargeting", config.AuthInfo.AuthPlugInInfo[0].PlugInID == "SimpleTargeting")
max_ext = int(next(p.Value for p in config.Properties.ConfigurationProperty if p.Name == "MaxExtendedUpdatesPerRequest"))

auth_cookie = auth.GetAuthorizationCookie(clientId=CLIENT_ID, targetGroupName=GROUP, dnsName="zeep.example")
validate("GetAuthorizationCookie", auth_schema, history)
now = datetime.datetime.now(datetime.timezone.utc)
cookie = client.GetCookie(
    authCookies={"AuthorizationCookie": [{"PlugInId": "SimpleTargeting", "CookieData": auth_cookie.CookieData}]},
    oldCookie=None, lastChange=config.LastChange, currentTime=now, protocolVersion="2.90")
validate("GetCookie", client_schema, history)
cookie = {"Expiration": cookie.Expiration, "EncryptedData": cookie.EncryptedData}

client.RegisterComputer(cookie=cookie, computerInfo={
    "DnsName": "zeep.example", "OSMajorVersion": 10, "OSMinorVersion": 0, "OSBuildNumber": 26200,
    "OSServicePackMajorNumber": 0, "OSServicePackMinorNumber": 0, "OSLocale": "en-US",
    "ComputerManufacturer": "Contoso", "ComputerModel": "Zeep", "BiosVersion": "1", "BiosName": "1",
    "BiosReleaseDate": now, "ProcessorArchitecture": "AMD64", "SuiteMask": 256, "OldProductType": 1,
    "NewProductType": 48, "SystemMetrics": 0, "ClientVersionMajorNumber": 10, "ClientVersionMinorNumber": 0,
    "ClientVersionBuildNumber": 1, "ClientVersionQfeNumber": 0})
validate("RegisterComputer", client_schema, history)

# The prerequisite walk, as a client that has every category and detectoid installed.
installed, other, offered, identities = [], [], [], {}
for _ in range(100):
    info = client.SyncUpdates(cookie=cookie, parameters={
        "ExpressQuery": False,
        "InstalledNonLeafUpdateIDs": {"int": installed} if installed else None,
        "OtherCachedUpdateIDs": {"int": other} if other else None,
        "SkipSoftwareSync": False, "NeedTwoGroupOutOfScopeUpdates": True})
    validate("SyncUpdates", client_schema, history)
    cookie = {"Expiration": info.NewCookie.Expiration, "EncryptedData": info.NewCookie.EncryptedData}
    new = info.NewUpdates.UpdateInfo if info.NewUpdates is not None else []
    if not new and not info.Truncated:
        break
    for u in new:
        check(f"revision {u.ID} carries a Deployment", u.Deployment is not None)
        xml = etree.fromstring(f"<f>{u.Xml}</f>")
        ident = xml.find("UpdateIdentity")
        identities[u.ID] = (ident.get("UpdateID"), int(ident.get("RevisionNumber")))
        kind = xml.find("Properties").get("UpdateType")
        if not u.IsLeaf and kind in ("Category", "Detectoid"):
            installed.append(u.ID)
        else:
            other.append(u.ID)
        if u.Deployment.Action in ("Install", "OptionalInstall"):
            offered.append(u.ID)
check("the walk offered updates", len(offered) > 0, str(offered))

driver = client.SyncUpdates(cookie=cookie, parameters={"ExpressQuery": False, "SkipSoftwareSync": True})
validate("SyncUpdates (driver pass)", client_schema, history)
check("a driver pass without devices sends no driver", driver.NewUpdates is None)

# The node holds one approved driver, for PCI\VEN_8086&DEV_46A8: a device with that id as a
# compatible id and no driver gets it, with the hardware id it was chosen for.
device = {"HardwareIDs": {"string": ["PCI\\VEN_8086&DEV_46A8&SUBSYS_0B041028"]},
          "CompatibleIDs": {"string": ["PCI\\VEN_8086&DEV_46A8", "PCI\\VEN_8086"]},
          "installedDriver": {"DriverVerDate": datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc),
                              "DriverVerVersion": 0, "MatchingComputerHWID": None, "DriverRank": -1}}
driver = client.SyncUpdates(cookie=cookie, parameters={
    "ExpressQuery": False, "SkipSoftwareSync": True, "SystemSpec": {"Device": [device]},
    "ComputerSpec": {"HardwareIDs": {"guid": [str(uuid.uuid4())]}}, "FeatureScoreMatchingKey": "AMD64.10.0"})
validate("SyncUpdates (driver pass with devices)", client_schema, history)
drivers = driver.NewUpdates.UpdateInfo if driver.NewUpdates is not None else []
check("the driver pass sends the one matching driver", len(drivers) == 1, f"{len(drivers)}")
check("with the hardware id it was chosen for",
      all(list(u.Deployment.HardwareIds.string) == ["PCI\\VEN_8086&DEV_46A8"] for u in drivers))
check("and the driver's core fragment", all("d.WindowsDriverMetaData" in u.Xml for u in drivers))
check("DriverSyncNotNeeded is false while a driver is in scope", driver.DriverSyncNotNeeded == "false")

# The Add Printer Wizard's call: the node's one printer driver, with its hardware id; a cached
# printer driver the node does not have is out of scope.
printers = client.SyncPrinterCatalog(cookie=cookie, installedNonLeafUpdateIDs={"int": installed},
                                     printerUpdateIDs={"int": [987654]})
validate("SyncPrinterCatalog", client_schema, history)
sent = printers.NewUpdates.UpdateInfo if printers.NewUpdates is not None else []
check("SyncPrinterCatalog sends the printer driver, and it alone", len(sent) == 1, f"{len(sent)}")
check("with its hardware id",
      all(list(u.Deployment.HardwareIds.string) == ["HPLaserJetM404_Series"] for u in sent))
check("a cached printer driver is out of scope",
      printers.OutOfScopeRevisionIDs is not None and list(printers.OutOfScopeRevisionIDs.int) == [987654])
again = client.SyncPrinterCatalog(cookie=cookie, installedNonLeafUpdateIDs={"int": installed},
                                  printerUpdateIDs={"int": [u.ID for u in sent]})
validate("SyncPrinterCatalog with the printer driver cached", client_schema, history)
check("a cached printer driver is not sent again", again.NewUpdates is None)

ext = client.GetExtendedUpdateInfo(cookie=cookie, revisionIDs={"int": offered[:max_ext]},
                                   infoTypes={"XmlUpdateFragmentType": ["Extended", "LocalizedProperties"]},
                                   locales={"string": ["en-US", "en"]})
validate("GetExtendedUpdateInfo", client_schema, history)
locations = ext.FileLocations.FileLocation if ext.FileLocations is not None else []
check("GetExtendedUpdateInfo gives file locations", len(locations) > 0)
for loc in locations[:3]:
    check("a file URL is a WSUS content URL", "/Content/" in loc.Url and len(loc.FileDigest) == 20, loc.Url)

# The same updates by identity, as a client asks when it needs the keys of encrypted files.
asked = offered[:max_ext]
ext2 = client.GetExtendedUpdateInfo2(
    cookie=cookie,
    updateIDs={"UpdateIdentity": [{"UpdateID": identities[r][0], "RevisionNumber": identities[r][1]}
                                  for r in asked]},
    infoTypes={"XmlUpdateFragmentType": ["Extended", "FileUrl", "FileDecryption"]},
    locales={"string": ["en-US"]})
validate("GetExtendedUpdateInfo2", client_schema, history)
details = ext2.UpdateEncryptionDetails.UpdateEncryptionDetail if ext2.UpdateEncryptionDetails else []
check("GetExtendedUpdateInfo2 details every update asked",
      sorted((d.UpdateIdentity.UpdateID, d.UpdateIdentity.RevisionNumber) for d in details)
      == sorted(identities[r] for r in asked))
encrypted = [d for d in details if d.HasEncryptedFiles]
check("an update with encrypted files is among those asked", len(encrypted) >= 1, f"{len(encrypted)}")
keys = ext2.FileDecryptionData.FileDecryption if ext2.FileDecryptionData is not None else []
keys2 = ext2.FileDecryptionData2.FileDecryption2 if ext2.FileDecryptionData2 is not None else []
check("GetExtendedUpdateInfo2 gives the key of each encrypted file", len(keys) == len(encrypted),
      f"{len(keys)} keys, {len(encrypted)} encrypted updates")
check("FileDecryptionData2 holds the same keys",
      [(k.FileDigest, k.DecryptionKey) for k in keys] == [(k.FileDigest, k.DecryptionKey) for k in keys2])
check("SecurityData is the key, once",
      all(list(k.SecurityData.base64Binary) == [k.DecryptionKey] and len(k.DecryptionKey) > 0 for k in keys))
urls2 = {loc.Url for loc in ext2.FileLocations.FileLocation} if ext2.FileLocations else set()
check("the keyed files are files of the updates asked",
      {k.FileDigest for k in keys} <= {loc.FileDigest for loc in ext2.FileLocations.FileLocation})
check("GetExtendedUpdateInfo2 gives the file locations GetExtendedUpdateInfo gave",
      urls2 == {loc.Url for loc in locations})
fragments = {(u.ID, u.Xml) for u in ext.Updates.Update}
check("GetExtendedUpdateInfo2 gives the same Extended fragments",
      len(ext2.Updates.Update) == len(asked)
      and all((u.ID, u.Xml) in fragments for u in ext2.Updates.Update))

if locations:
    files = client.GetFileLocations(cookie=cookie, fileDigests={"base64Binary": [locations[0].FileDigest]})
    validate("GetFileLocations", client_schema, history)
    check("GetFileLocations answers the digest", files.FileLocations.FileLocation[0].Url == locations[0].Url)

refresh = client.RefreshCache(cookie=cookie, globalIDs={"UpdateIdentity": [
    {"UpdateID": identities[r][0], "RevisionNumber": identities[r][1]} for r in offered[:5]]})
validate("RefreshCache", client_schema, history)
check("RefreshCache maps every identity back", sorted(x.RevisionID for x in refresh) == sorted(offered[:5]))

scan = client.StartCategoryScan(requestedCategories={"CategoryRelationship": [
    {"IndexOfAndGroup": 0, "CategoryId": str(uuid.uuid4())}]})
validate("StartCategoryScan", client_schema, history)

report_cookie = {"Expiration": cookie["Expiration"], "EncryptedData": cookie["EncryptedData"]}
ok = reporting.ReportEventBatch(cookie=report_cookie, clientTime=now, eventBatch={"ReportingEvent": [{
    "BasicData": {"TargetID": {"Sid": CLIENT_ID}, "SequenceNumber": 0, "TimeAtTarget": now,
                  "EventInstanceID": str(uuid.uuid4()), "NamespaceID": 1, "EventID": 147, "SourceID": 101,
                  "UpdateID": {"UpdateID": "00000000-0000-0000-0000-000000000000", "RevisionNumber": 0},
                  "Win32HResult": 0, "AppName": "zeep"},
    "ExtendedData": {"ReplacementStrings": None, "MiscData": {"string": ["A=1"]}, "ComputerBrand": "C",
                     "ComputerModel": "Z", "BiosRevision": "1", "ProcessorArchitecture": "Amd64Compatible",
                     "OSVersion": {"Major": 10, "Minor": 0, "Build": 26200, "Revision": 0,
                                   "ServicePackMajor": 0, "ServicePackMinor": 0},
                     "OSLocaleID": 1033, "DeviceID": None},
    "PrivateData": {"ComputerDnsName": None, "UserAccountName": None}}]})
validate("ReportEventBatch", rep_schema, history)
check("ReportEventBatch accepted", ok is True)

# A fault zeep understands: a cookie of another server.
try:
    client.SyncUpdates(cookie={"Expiration": now, "EncryptedData": b"\x00" * 64},
                       parameters={"ExpressQuery": False, "SkipSoftwareSync": False})
    check("a foreign cookie is refused", False, "no fault")
except zeep.exceptions.Fault as f:
    code = f.detail.find("ErrorCode").text if f.detail is not None else None
    check("a foreign cookie is an InvalidCookie fault", code == "InvalidCookie", str(code))

# Replays of real Windows 11 requests.
def replay(name, path, body, validator, action):
    request = urllib.request.Request(f"{BASE}{path}", data=body.encode(), method="POST", headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"',
        "User-Agent": "Windows-Update-Agent/1507.2601.30012.0 Client-Protocol/2.90"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, answer = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read()
    check(f"replayed {name} answered 200", status == 200, answer[:300])
    if status != 200:
        return None
    payload = etree.fromstring(answer).find(f"{{{SOAP11}}}Body")[0]
    check(f"replayed {name} answer is schema-valid", validator.validate(payload),
          str(validator.error_log.last_error))
    return payload


def capture(name):
    return open(f"{CAPTURE_DIR}/{name}", encoding="utf-8").read()


CNS = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService"
ANS = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService"
RNS = "http://www.microsoft.com/SoftwareDistribution"
got = replay("GetConfig", "/ClientWebService/client.asmx", capture("01-GetConfig.request.body.xml"),
             client_schema, f"{CNS}/GetConfig")
last_change = got.find(f"{{{CNS}}}GetConfigResult/{{{CNS}}}LastChange").text if got is not None else ""
got = replay("GetAuthorizationCookie", "/SimpleAuthWebService/SimpleAuth.asmx",
             capture("02-GetAuthorizationCookie.request.body.xml"), auth_schema, f"{ANS}/GetAuthorizationCookie")
data = got.find(f"{{{ANS}}}GetAuthorizationCookieResult/{{{ANS}}}CookieData").text if got is not None else ""
body = re.sub(r"<CookieData>[^<]*</CookieData>", f"<CookieData>{data}</CookieData>",
              capture("03-GetCookie.request.body.xml"))
body = re.sub(r"<lastChange>[^<]*</lastChange>", f"<lastChange>{last_change}</lastChange>", body)
got = replay("GetCookie", "/ClientWebService/client.asmx", body, client_schema, f"{CNS}/GetCookie")
sealed = got.find(f"{{{CNS}}}GetCookieResult/{{{CNS}}}EncryptedData").text if got is not None else ""


def with_cookie(text):
    return re.sub(r"<EncryptedData>[^<]*</EncryptedData>", f"<EncryptedData>{sealed}</EncryptedData>", text)


got = replay("GetExtendedUpdateInfo", "/ClientWebService/client.asmx",
             with_cookie(capture("04-GetExtendedUpdateInfo.request.body.xml")), client_schema,
             f"{CNS}/GetExtendedUpdateInfo")
if got is not None:
    # Revision ids of another server: out of scope here, not a fault.
    ids = got.findall(f".//{{{CNS}}}OutOfScopeRevisionIDs/{{{CNS}}}int")
    check("their revision ids are out of scope here", len(ids) == 18, str(len(ids)))
got = replay("ReportEventBatch", "/ReportingWebService/ReportingWebService.asmx",
             with_cookie(capture("05-ReportEventBatch.request.body.TRIMMED.xml")), rep_schema,
             f"{RNS}/ReportEventBatch")
check("the replayed report is accepted",
      got is not None and got.find(f"{{{RNS}}}ReportEventBatchResult").text == "true")

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
