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
for config in (True, False):
    ids = sync.GetRevisionIdList(cookie=cookie, filter={"GetConfig": config, "Get63LanguageOnly": False})
    validate(f"GetRevisionIdList (GetConfig={config})", sync_schema, history)
    revisions[config] = ids.NewRevisions.UpdateIdentity if ids.NewRevisions is not None else []
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

sync.Ping(pingLevel=0)
answer = history.last_received["envelope"].find(f"{{{SOAP11}}}Body")[0]
check("Ping answers PingResponse",
      answer.tag == "{http://www.microsoft.com/SoftwareDistribution/Server/IMonitorable}PingResponse",
      answer.tag)

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
