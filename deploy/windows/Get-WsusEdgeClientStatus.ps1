#Requires -Version 5.1

<#
.SYNOPSIS
    Shows how this computer's Windows Update client is pointed at a WSUS / wsus-edge server, and
    how its last scans went.

.DESCRIPTION
    Prints:
      - the Windows Update and Delivery Optimization policy values (HKLM\SOFTWARE\Policies\...),
        with a warning for the usual mistakes;
      - the Windows Update client: its id (SusClientId, also its id on the node), the service
        it uses for automatic updates, the last successful search and installation, the state of
        the wuauserv service;
      - the WinHTTP (system) proxy, which scans use;
      - the latest events of the WindowsUpdateClient/Operational event log.
    Optionally it tests the connection to the server (-TestConnection), searches the Windows
    Update log for the scan's lines (-Log), and asks the node what it knows about this computer
    (-AdminUrl).

    Reading needs no elevation; -Log works best elevated.

.PARAMETER TestConnection
    Connect to WUServer and make a WSUS GetConfig call (no proxy, TLS checked for https://).

.PARAMETER Log
    Run Get-WindowsUpdateLog (Windows 10 / Server 2016 and later) into a temporary file and print
    the lines about the server, SyncUpdates, ServiceUrl, SOAP faults and failures.

.PARAMETER LogLines
    How many matching log lines -Log prints (the latest). Default 40.

.PARAMETER Events
    How many WindowsUpdateClient events to print. Default 10; 0 skips them.

.PARAMETER AdminUrl
    The admin listener of the wsus-edge node, e.g. http://branch01.contoso.com:8540, to print the
    node's record of this computer (/api/v1/computers/<SusClientId>). The admin listener is bound
    to 127.0.0.1 unless the node's listen.admin and admin.read_networks open it.

.PARAMETER AdminToken
    A token from the node's admin.token_file, when this computer is not in admin.read_networks.

.EXAMPLE
    .\Get-WsusEdgeClientStatus.ps1

.EXAMPLE
    .\Get-WsusEdgeClientStatus.ps1 -TestConnection -Log

.EXAMPLE
    .\Get-WsusEdgeClientStatus.ps1 -AdminUrl http://branch01.contoso.com:8540

.NOTES
    Windows PowerShell 5.1 or PowerShell 7. Guide: README.md in this folder.
#>
[CmdletBinding()]
param(
    [switch] $TestConnection,

    [switch] $Log,

    [ValidateRange(1, 10000)]
    [int] $LogLines = 40,

    [ValidateRange(0, 1000)]
    [int] $Events = 10,

    [ValidateNotNullOrEmpty()]
    [string] $AdminUrl,

    [ValidateNotNullOrEmpty()]
    [string] $AdminToken
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$PolicyRoot = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows'
$Policies = @(
    @{ Key = 'WindowsUpdate'; Names = @(
            'WUServer', 'WUStatusServer', 'UpdateServiceUrlAlternate', 'FillEmptyContentUrls',
            'SetProxyBehaviorForUpdateDetection', 'DoNotEnforceEnterpriseTLSCertPinningForUpdateDetection',
            'TargetGroupEnabled', 'TargetGroup', 'DoNotConnectToWindowsUpdateInternetLocations',
            'DisableDualScan', 'SetPolicyDrivenUpdateSourceForFeatureUpdates',
            'SetPolicyDrivenUpdateSourceForQualityUpdates', 'SetPolicyDrivenUpdateSourceForDriverUpdates',
            'SetPolicyDrivenUpdateSourceForOtherUpdates') }
    @{ Key = 'WindowsUpdate\AU'; Names = @(
            'UseWUServer', 'NoAutoUpdate', 'AUOptions', 'ScheduledInstallDay', 'ScheduledInstallTime',
            'DetectionFrequencyEnabled', 'DetectionFrequency', 'UseUpdateClassPolicySource') }
    @{ Key = 'DeliveryOptimization'; Names = @('DODownloadMode') }
)

function Get-PolicyValue {
    param([Parameter(Mandatory)] [string] $Key, [Parameter(Mandatory)] [string] $Name)
    $path = "$PolicyRoot\$Key"
    if (-not (Test-Path -LiteralPath $path)) { return $null }
    $item = Get-Item -LiteralPath $path
    if ($item.GetValueNames() -notcontains $Name) { return $null }
    $item.GetValue($Name)
}

function Get-InnermostException {
    param([Parameter(Mandatory)] [System.Exception] $Exception)
    $e = $Exception
    while ($null -ne $e.InnerException) { $e = $e.InnerException }
    $e
}

function Test-WsusEndpoint {
    # TCP connect, then a WSUS GetConfig call (MS-WUSP 2.2.2.2.1) without a proxy.
    param([Parameter(Mandatory)] [string] $Url)
    $uri = $null
    if (-not [Uri]::TryCreate($Url, [UriKind]::Absolute, [ref] $uri)) {
        Write-Warning "${Url}: not a URL."
        return
    }
    $tcp = New-Object System.Net.Sockets.TcpClient
    try {
        if (-not $tcp.ConnectAsync($uri.DnsSafeHost, $uri.Port).Wait(5000)) {
            Write-Warning "${Url}: no TCP connection to $($uri.DnsSafeHost):$($uri.Port) within 5 s."
            return
        }
        Write-Host "${Url}: TCP connection to $($uri.DnsSafeHost):$($uri.Port) works."
    }
    catch {
        Write-Warning "${Url}: cannot connect: $((Get-InnermostException $_.Exception).Message)"
        return
    }
    finally {
        $tcp.Close()
    }

    $soap = '<?xml version="1.0" encoding="utf-8"?>' +
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>' +
        '<GetConfig xmlns="http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService">' +
        '<protocolVersion>1.8</protocolVersion></GetConfig></soap:Body></soap:Envelope>'
    $body = [System.Text.Encoding]::UTF8.GetBytes($soap)
    $savedProtocols = [System.Net.ServicePointManager]::SecurityProtocol
    $response = $null
    try {
        if ([int] $savedProtocols -ne 0) {
            [System.Net.ServicePointManager]::SecurityProtocol = $savedProtocols -bor [System.Net.SecurityProtocolType]::Tls12
        }
        $request = [System.Net.WebRequest]::Create($Url.TrimEnd('/') + '/ClientWebService/client.asmx')
        $request.Method = 'POST'
        $request.ContentType = 'text/xml; charset=utf-8'
        $request.Headers.Add('SOAPAction', '"http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService/GetConfig"')
        $request.Proxy = $null
        $request.Timeout = 15000
        $request.ContentLength = $body.Length
        $stream = $request.GetRequestStream()
        try { $stream.Write($body, 0, $body.Length) } finally { $stream.Close() }
        $response = $request.GetResponse()
        $text = (New-Object System.IO.StreamReader($response.GetResponseStream())).ReadToEnd()
        if ($text -match 'GetConfigResult') {
            Write-Host "${Url}: answers GetConfig like a WSUS server$(if ($uri.Scheme -eq 'https') { ' (TLS certificate trusted)' })."
        }
        else {
            Write-Warning "${Url}: answered, but not with a GetConfig result."
        }
    }
    catch {
        Write-Warning "${Url}: GetConfig failed: $((Get-InnermostException $_.Exception).Message)"
    }
    finally {
        if ($null -ne $response) { $response.Close() }
        [System.Net.ServicePointManager]::SecurityProtocol = $savedProtocols
    }
}

function Write-Section {
    param([Parameter(Mandatory)] [string] $Title)
    Write-Host ''
    Write-Host "== $Title" -ForegroundColor Cyan
}

# --- policy values --------------------------------------------------------------------------

Write-Section "Policy values under $PolicyRoot"
$rows = foreach ($policy in $Policies) {
    foreach ($name in $policy.Names) {
        $value = Get-PolicyValue -Key $policy.Key -Name $name
        [pscustomobject]@{
            Key   = $policy.Key
            Value = $name
            Data  = if ($null -eq $value) { '(not set)' } else { $value }
        }
    }
}
$rows | Format-Table -AutoSize | Out-Host

$wuServer = Get-PolicyValue -Key 'WindowsUpdate' -Name 'WUServer'
$statusServer = Get-PolicyValue -Key 'WindowsUpdate' -Name 'WUStatusServer'
$useWuServer = Get-PolicyValue -Key 'WindowsUpdate\AU' -Name 'UseWUServer'
if (-not $wuServer) {
    Write-Warning 'WUServer is not set: this computer is not pointed at an intranet update server.'
}
elseif ($useWuServer -ne 1) {
    Write-Warning 'WUServer is set but UseWUServer is not 1: the client ignores WUServer.'
}
if ($wuServer -and $wuServer -match '^https?://[^/]+/.') {
    Write-Warning 'WUServer has a path: it must be scheme://host:port only.'
}
if ($wuServer -and $statusServer -and $statusServer -ne $wuServer) {
    Write-Warning 'WUStatusServer differs from WUServer: reports go to another server than scans.'
}
if ((Get-PolicyValue -Key 'WindowsUpdate\AU' -Name 'NoAutoUpdate') -eq 1) {
    Write-Warning '"Configure Automatic Updates" is Disabled (NoAutoUpdate = 1): the intranet server policy has no effect.'
}

# --- the Windows Update client --------------------------------------------------------------

Write-Section 'Windows Update client'
$clientId = $null
$wuKey = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate'
if (Test-Path -LiteralPath $wuKey) {
    $clientId = (Get-Item -LiteralPath $wuKey).GetValue('SusClientId')
}
$service = Get-Service -Name wuauserv -ErrorAction SilentlyContinue
$info = [ordered]@{
    'SusClientId (id on the node)' = if ($clientId) { $clientId } else { '(none yet: created at the first scan)' }
    'wuauserv'                     = if ($service) { "$($service.Status), start type $($service.StartType)" } else { '(not found)' }
}
try {
    $defaultService = (New-Object -ComObject Microsoft.Update.ServiceManager).Services |
        Where-Object { $_.IsDefaultAUService } | Select-Object -First 1
    if ($defaultService) {
        $info['Automatic Updates service'] = "$($defaultService.Name) {$($defaultService.ServiceID)}"
        if ($defaultService.ServiceID -ne '3da21691-e39d-4da6-8a4b-b43877bcb1b7') {
            Write-Warning 'The default Automatic Updates service is not the managed (WSUS) service 3DA21691-E39D-4DA6-8A4B-B43877BCB1B7.'
        }
    }
    $results = (New-Object -ComObject Microsoft.Update.AutoUpdate).Results
    $info['Last successful search (UTC)'] = $results.LastSearchSuccessDate
    $info['Last successful installation (UTC)'] = $results.LastInstallationSuccessDate
}
catch {
    Write-Warning "Could not ask the Windows Update agent: $((Get-InnermostException $_.Exception).Message)"
}
[pscustomobject] $info | Format-List | Out-Host

Write-Section 'WinHTTP (system) proxy, used by scans'
try {
    (& netsh.exe winhttp show proxy) | Where-Object { $_.Trim() } | ForEach-Object { Write-Host "  $($_.Trim())" }
}
catch {
    Write-Warning "netsh winhttp show proxy failed: $($_.Exception.Message)"
}

if ($Events -gt 0) {
    Write-Section "Latest $Events WindowsUpdateClient events"
    try {
        $firstLine = @{ Name = 'Message'; Expression = { ($_.Message -split "`r?`n")[0] } }
        $columns = @('TimeCreated', 'Id', 'LevelDisplayName', $firstLine)
        Get-WinEvent -LogName 'Microsoft-Windows-WindowsUpdateClient/Operational' -MaxEvents $Events |
            Select-Object -Property $columns | Format-Table -AutoSize -Wrap | Out-Host
    }
    catch {
        Write-Warning "Could not read the WindowsUpdateClient event log: $($_.Exception.Message)"
    }
}

# --- optional checks ------------------------------------------------------------------------

if ($TestConnection) {
    Write-Section 'Connection'
    if (-not $wuServer) {
        Write-Warning 'No WUServer to test.'
    }
    else {
        Test-WsusEndpoint -Url $wuServer
        if ($statusServer -and $statusServer -ne $wuServer) { Test-WsusEndpoint -Url $statusServer }
    }
}

if ($Log) {
    Write-Section 'Windows Update log'
    if (-not (Get-Command -Name Get-WindowsUpdateLog -ErrorAction SilentlyContinue)) {
        Write-Warning 'Get-WindowsUpdateLog is not available here (Windows 10 / Server 2016 and later); see %windir%\WindowsUpdate.log on older Windows.'
    }
    else {
        $logPath = Join-Path ([System.IO.Path]::GetTempPath()) "WindowsUpdate-$(Get-Date -Format yyyyMMdd-HHmmss).log"
        Get-WindowsUpdateLog -LogPath $logPath | Out-Null
        $patterns = @('SyncUpdates', 'ServiceUrl', 'Server URL', 'ProtocolTalker', 'SOAP', 'FAILED',
            'Finding updates', 'Updates found', '3DA21691')
        if ($wuServer) { $patterns += ([Uri] $wuServer).Host }
        $regex = ($patterns | ForEach-Object { [regex]::Escape($_) }) -join '|'
        Select-String -LiteralPath $logPath -Pattern $regex |
            Select-Object -Last $LogLines | ForEach-Object { Write-Host $_.Line }
        Write-Host ''
        Write-Host "Whole log: $logPath"
    }
}
else {
    Write-Host ''
    Write-Host 'The scan in detail: Get-WindowsUpdateLog -LogPath $env:TEMP\WindowsUpdate.log (or run this script with -Log).'
}

if ($AdminUrl) {
    Write-Section 'What the node knows about this computer'
    if (-not $clientId) {
        Write-Warning 'No SusClientId yet: the computer has not scanned.'
    }
    else {
        $headers = @{}
        if ($AdminToken) { $headers['Authorization'] = "Bearer $AdminToken" }
        $url = $AdminUrl.TrimEnd('/') + "/api/v1/computers/$clientId"
        try {
            $computer = Invoke-RestMethod -Uri $url -Headers $headers -UseBasicParsing
            $when = {
                param($Seconds)
                if ($Seconds) { [DateTimeOffset]::FromUnixTimeSeconds([long] $Seconds).LocalDateTime } else { '(never)' }
            }
            [pscustomobject]@{
                'DNS name'    = $computer.dns_name
                'OS version'  = $computer.os_version
                'Registered'  = & $when $computer.registered_at
                'Last sync'   = & $when $computer.last_sync
                'Last status' = & $when $computer.last_status
                'Up to date'  = $computer.up_to_date
                'Updates'     = ($computer.updates.PSObject.Properties | ForEach-Object { "$($_.Name)=$($_.Value)" }) -join ', '
            } | Format-List | Out-Host
        }
        catch {
            Write-Warning "${url}: $($_.Exception.Message) (404: the node has not seen this computer yet; 401/403: use -AdminToken or admin.read_networks)"
        }
    }
}
