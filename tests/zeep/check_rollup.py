#!/usr/bin/env python3
"""An independent SOAP stack against a running node's rollup endpoints (MS-WSUSSS reporting
phase, upstream side): zeep, built from Microsoft's Reporting WSDL, rolls up a downstream
server, its computers and their update states as a WSUS downstream would; every answer is
validated against the WSDL's schema, and the node's answers are checked. Prints one line per
check; exit 0 when all pass.

    check_rollup.py BASE_URL WSDL_DIR

Run by tests/rollup.rs, which then checks what the node kept.
"""

import datetime
import sys
import uuid

from zeep.plugins import HistoryPlugin

from wsdl_checks import check, failures, schema_validator, service, validate

BASE, WSDL_DIR = sys.argv[1:3]
REPORTING_WSDL = "wsusss-ReportingWebService.wsdl"
AUTH_WSDL = "wsusss-DssAuthWebService.wsdl"

history = HistoryPlugin()
_, reporting = service(BASE, WSDL_DIR, REPORTING_WSDL, "WebServiceSoap",
                       "/ReportingWebService/ReportingWebService.asmx", history)
schema = schema_validator(f"{WSDL_DIR}/{REPORTING_WSDL}")
_, dss = service(BASE, WSDL_DIR, AUTH_WSDL, "DssAuthWebServiceSoap",
                 "/DssAuthWebService/DssAuthWebService.asmx", history)

# A downstream server known to the node: it authorized.
branch = str(uuid.uuid4())
dss.GetAuthorizationCookie(accountName="branch.rollup.example", accountGuid=branch)
cookie = {"Expiration": datetime.datetime(9999, 12, 31, 23, 59, 59), "EncryptedData": b""}
now = datetime.datetime.now(datetime.timezone.utc)
never = datetime.datetime(1, 1, 1)

config = reporting.GetRollupConfiguration(cookie=cookie)
validate("GetRollupConfiguration", schema, history)
check("GetRollupConfiguration: detailed rollup", config.DoDetailedRollup is True)
check("GetRollupConfiguration: batch maxima", config.RollupComputerStatusMaxBatchSize > 0
      and config.RollupComputersMaxBatchSize > 0)
again = reporting.GetRollupConfiguration(cookie=cookie)
check("GetRollupConfiguration: the reset GUID stays", again.RollupResetGuid == config.RollupResetGuid)

summary = {name: 0 for name in [
    "UpdateCount", "DeclinedUpdateCount", "ApprovedUpdateCount", "NotApprovedUpdateCount",
    "UpdatesWithStaleUpdateApprovalsCount", "ExpiredUpdateCount",
    "CriticalOrSecurityUpdatesNotApprovedForInstallCount",
    "WsusInfrastructureUpdatesNotApprovedForInstallCount", "UpdatesWithClientErrorsCount",
    "UpdatesWithServerErrorsCount", "UpdatesNeedingFilesCount", "UpdatesNeededByComputersCount",
    "UpdatesUpToDateCount", "CustomComputerTargetGroupCount", "ComputerTargetCount",
    "ComputerTargetsNeedingUpdatesCount", "ComputerTargetsWithUpdateErrorsCount",
    "ComputersUpToDateCount"]}
summary.update(ComputerTargetCount=2, ComputerTargetsNeedingUpdatesCount=1,
               ComputerTargetsWithUpdateErrorsCount=1, ComputersUpToDateCount=1)
reporting.RollupDownstreamServers(cookie=cookie, clientTime=now, downstreamServers={
    "DownstreamServerRollupInfo": [{
        "ServerId": branch, "FullDomainName": "branch.rollup.example", "LastSyncTime": now,
        "ParentServerId": config.ServerId, "Version": "0.1.0", "IsReplica": True,
        "LastRollupTime": now, "ServerSummary": summary, "ClientSummaries": None}]})
validate("RollupDownstreamServers", schema, history)


def details(name):
    return {"IPAddress": "10.0.0.7", "FullDomainName": name, "OSMajorVersion": 10,
            "OSMinorVersion": 0, "OSBuildNumber": 26200, "OSServicePackMajorNumber": 0,
            "OSServicePackMinorNumber": 0, "OSLocale": "en-US", "ComputerMake": "Contoso",
            "ComputerModel": "Rollup", "BiosReleaseDate": never, "ProcessorArchitecture": "x64",
            "SuiteMask": 0, "OldProductType": 1, "NewProductType": 1, "SystemMetrics": 0,
            "ClientVersion": "10.0.26100.1"}


def computer(cid, name=None, parent=branch):
    info = {"ComputerId": cid, "LastSyncTime": now, "LastSyncResult": 1,
            "LastReportedRebootTime": never, "LastReportedStatusTime": now,
            "LastInventoryTime": never, "ParentServerId": parent}
    if name:
        info["Details"] = details(name)
    return info


c1, c2, c3 = (str(uuid.uuid4()) for _ in range(3))
result = reporting.RollupComputers(cookie=cookie, clientTime=now, computers={
    "ComputerRollupInfo": [computer(c1, "pc1.rollup.example"), computer(c2, "pc2.rollup.example")]})
validate("RollupComputers", schema, history)
check("RollupComputers with details: nothing to send again", not result)
result = reporting.RollupComputers(cookie=cookie, clientTime=now, computers={
    "ComputerRollupInfo": [computer(c3)]})
validate("RollupComputers of a new computer without details", schema, history)
check("RollupComputers: a new computer without details is asked for them (NewParent)",
      result and result[0].ComputerId == c3 and result[0].Change == "NewParent", f"{result}")

numbers = {"ComputerLastRollupNumber": [{"ComputerId": c1, "RollupNumber": 1},
                                        {"ComputerId": c2, "RollupNumber": 1}]}
behind = reporting.GetOutOfSyncComputers(cookie=cookie, parentServerId=branch,
                                         lastRollupNumbers=numbers)
validate("GetOutOfSyncComputers", schema, history)
check("GetOutOfSyncComputers: both computers owe their status", sorted(behind or []) == sorted([c1, c2]),
      f"{behind}")

u1, u2 = str(uuid.uuid4()), str(uuid.uuid4())
ok = reporting.RollupComputerStatus(cookie=cookie, clientTime=now, parentServerId=branch, computers={
    "ComputerStatusRollupInfo": [{
        "InstanceId": str(uuid.uuid4()), "ComputerId": c1, "EffectiveLastDetectionTime": now,
        "RollupNumber": 1, "IsFullRollup": True, "UpdateStatus": {
            "ComputerStatusRollupUpdateStatus": [
                {"UpdateId": u1, "SummarizationState": 4, "LastChangeTime": now},
                {"UpdateId": u2, "SummarizationState": 5, "LastChangeTime": now}]}}]})
validate("RollupComputerStatus", schema, history)
check("RollupComputerStatus accepted", ok is True)
behind = reporting.GetOutOfSyncComputers(cookie=cookie, parentServerId=branch,
                                         lastRollupNumbers=numbers)
check("GetOutOfSyncComputers: only the computer not rolled up", behind == [c2], f"{behind}")

try:
    reporting.RollupComputers(cookie=cookie, clientTime=now, computers={
        "ComputerRollupInfo": [computer(str(uuid.uuid4()), "x", parent=str(uuid.uuid4()))]})
    check("RollupComputers under an unknown server is refused", False, "accepted")
except Exception as fault:
    check("RollupComputers under an unknown server is refused", "Fault" in type(fault).__name__,
          repr(fault))

print(f"COMPUTERS {c1} {c2} {c3} UPDATES {u1} {u2} BRANCH {branch}")
print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
