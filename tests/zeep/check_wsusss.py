#!/usr/bin/env python3
"""An independent SOAP stack against a running node's server-server protocol (upstream side):
Python zeep, built from Microsoft's MS-WSUSSS WSDLs, calls each operation a downstream server
starts a sync with and parses the answer strictly; every answer body is also validated against
the WSDL's XML schema with lxml. Prints one line per check; exit 0 when all pass.

    check_wsusss.py BASE_URL WSDL_DIR

Run by tests/wsusss_zeep.rs against a node it started.
"""

import sys
import uuid

from zeep.plugins import HistoryPlugin

from wsdl_checks import SOAP11, check, failures, schema_validator, service, validate

BASE, WSDL_DIR = sys.argv[1:3]
SYNC_WSDL = "wsusss-ServerSyncWebService.wsdl"
AUTH_WSDL = "wsusss-DssAuthWebService.wsdl"

history = HistoryPlugin()
_, sync = service(BASE, WSDL_DIR, SYNC_WSDL, "ServerSyncProxySoap",
                  "/ServerSyncWebService/ServerSyncWebService.asmx", history)
sync_schema = schema_validator(f"{WSDL_DIR}/{SYNC_WSDL}")
_, dss = service(BASE, WSDL_DIR, AUTH_WSDL, "DssAuthWebServiceSoap",
                 "/DssAuthWebService/DssAuthWebService.asmx", history)
dss_schema = schema_validator(f"{WSDL_DIR}/{AUTH_WSDL}")

config = sync.GetAuthConfig()
validate("GetAuthConfig", sync_schema, history)
plug_in = config.AuthInfo.AuthPlugInInfo[0]
check("GetAuthConfig names DssTargeting", plug_in.PlugInID == "DssTargeting")
check("GetAuthConfig gives the relative DssAuth URL",
      plug_in.ServiceUrl == "DssAuthWebService/DssAuthWebService.asmx")

auth = dss.GetAuthorizationCookie(accountName="branch.zeep.example", accountGuid=str(uuid.uuid4()))
validate("GetAuthorizationCookie", dss_schema, history)
check("GetAuthorizationCookie gives CookieData", bool(auth.CookieData))

cookie = sync.GetCookie(
    authCookies={"AuthorizationCookie": [{"PlugInId": auth.PlugInId, "CookieData": auth.CookieData}]},
    oldCookie=None, protocolVersion="1.20")
validate("GetCookie", sync_schema, history)
cookie = {"Expiration": cookie.Expiration, "EncryptedData": cookie.EncryptedData}

data = sync.GetConfigData(cookie=cookie, configAnchor=None)
validate("GetConfigData", sync_schema, history)
check("GetConfigData: MaxNumberOfUpdatesPerRequest", data.MaxNumberOfUpdatesPerRequest == 100)
check("GetConfigData: a language list", len(data.LanguageUpdateList.ServerSyncLanguageData) == 1)
again = sync.GetConfigData(cookie=cookie, configAnchor=data.NewConfigAnchor)
validate("GetConfigData with the current anchor", sync_schema, history)
check("GetConfigData with the current anchor: no language",
      again.LanguageUpdateList is None or not again.LanguageUpdateList.ServerSyncLanguageData)

revisions = {}
anchors = {}
for config in (True, False):
    ids = sync.GetRevisionIdList(cookie=cookie, filter={"GetConfig": config, "Get63LanguageOnly": False})
    validate(f"GetRevisionIdList (GetConfig={config})", sync_schema, history)
    revisions[config] = ids.NewRevisions.UpdateIdentity if ids.NewRevisions is not None else []
    anchors[config] = ids.Anchor
    check(f"GetRevisionIdList (GetConfig={config}) lists revisions", len(revisions[config]) > 0)
    again = sync.GetRevisionIdList(cookie=cookie, filter={
        "Anchor": ids.Anchor, "GetConfig": config, "Get63LanguageOnly": False})
    validate(f"GetRevisionIdList (GetConfig={config}) from its anchor", sync_schema, history)
    check(f"GetRevisionIdList (GetConfig={config}) from its anchor lists nothing",
          again.NewRevisions is None or not again.NewRevisions.UpdateIdentity)

wanted = [{"UpdateID": i.UpdateID, "RevisionNumber": i.RevisionNumber} for i in revisions[False][:20]]
update_data = sync.GetUpdateData(cookie=cookie, updateIds={"UpdateIdentity": wanted})
validate("GetUpdateData", sync_schema, history)
got = update_data.updates.ServerSyncUpdateData
check("GetUpdateData gives every document asked for", len(got) == len(wanted), f"{len(got)}")
check("GetUpdateData documents are update XML", all(u.XmlUpdateBlob.lstrip().startswith("<") for u in got))
with_files = [u for u in got if u.FileDigestList is not None]
check("GetUpdateData lists file digests", len(with_files) > 0)

deployments = sync.GetDeployments(cookie=cookie, deploymentAnchor=None, syncAnchor=anchors[False])
validate("GetDeployments", sync_schema, history)
check("GetDeployments echoes the syncAnchor", deployments.Anchor == anchors[False])
groups = {g.Name: g for g in deployments.Groups.ServerSyncTargetGroup}
check("GetDeployments lists the built-in and the added groups",
      {"All Computers", "Unassigned Computers", "Ring 1"} <= set(groups), f"{sorted(groups)}")
check("GetDeployments: All Computers is the root",
      groups["All Computers"].ParentGroupId == "00000000-0000-0000-0000-000000000000")
live = deployments.Deployments.ServerSyncDeployment
check("GetDeployments gives the approvals (4 + 6)", len(live) == 10, f"{len(live)}")
check("GetDeployments: every approval installs, assigned, with a GUID",
      all(d.Action == 0 and d.IsAssigned and d.DeploymentGuid for d in live))
later = sync.GetDeployments(cookie=cookie, deploymentAnchor=deployments.Anchor, syncAnchor=anchors[False])
validate("GetDeployments from its anchor", sync_schema, history)
check("GetDeployments from its anchor: nothing new",
      later.Deployments is None or not later.Deployments.ServerSyncDeployment)

decryption = sync.GetUpdateDecryptionData(cookie=cookie, updateIds={"UpdateIdentity": wanted[:5]})
validate("GetUpdateDecryptionData", sync_schema, history)
check("GetUpdateDecryptionData: one entry per identity",
      len(decryption.ServerSyncUpdateFileDecryption) == 5)
listed = [{"UpdateID": i.UpdateID, "RevisionNumber": i.RevisionNumber} for i in revisions[False][:100]]
decryption = sync.GetUpdateDecryptionData(cookie=cookie, updateIds={"UpdateIdentity": listed})
validate("GetUpdateDecryptionData of every update", sync_schema, history)
files = [f for u in decryption.ServerSyncUpdateFileDecryption if u.FileDecryptionData is not None
         for f in u.FileDecryptionData.ServerSyncFileDecryption]
keyed = [f for f in files if f.DecryptionKey]
check("GetUpdateDecryptionData gives the keys the root holds, of encrypted files only",
      3 <= len(keyed) < len(files) and all(len(f.FileDigest) == 20 for f in files), f"{len(keyed)}")

digest = with_files[0].FileDigestList.base64Binary[0]
sync.DownloadFiles(cookie=cookie, fileDigestList={"base64Binary": [digest]})
validate("DownloadFiles", sync_schema, history)
try:
    sync.DownloadFiles(cookie=cookie, fileDigestList={"base64Binary": [b"\x01" * 20]})
    check("DownloadFiles of an unknown digest faults", False, "no fault")
except Exception as fault:  # zeep.exceptions.Fault
    detail = fault.detail if hasattr(fault, "detail") else None
    code = detail.findtext("ErrorCode") if detail is not None else None
    check("DownloadFiles of an unknown digest faults FileDigestsMissing",
          code == "FileDigestsMissing", f"{code}")

sync.Ping(pingLevel=0)
answer = history.last_received["envelope"].find(f"{{{SOAP11}}}Body")[0]
check("Ping answers PingResponse",
      answer.tag == "{http://www.microsoft.com/SoftwareDistribution/Server/IMonitorable}PingResponse",
      answer.tag)

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
