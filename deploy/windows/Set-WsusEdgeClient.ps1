#Requires -Version 5.1
#Requires -RunAsAdministrator

<#
.SYNOPSIS
    Points this computer's Windows Update client at a wsus-edge node (or any WSUS server) by
    writing the Group Policy registry values directly, then restarts the Windows Update service
    and starts a scan. -Remove puts back what was there before.

.DESCRIPTION
    For test and pilot machines that no Group Policy object points at a WSUS server. The script
    writes the same registry values as these policies (see README.md in this folder):

      Specify intranet Microsoft update service location
        HKLM\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate
          WUServer                                               REG_SZ     -Server
          WUStatusServer                                         REG_SZ     -StatusServer (default: -Server)
          UpdateServiceUrlAlternate                              REG_SZ     -AlternateDownloadServer (default: empty)
          FillEmptyContentUrls                                   REG_DWORD  0
          DoNotEnforceEnterpriseTLSCertPinningForUpdateDetection REG_DWORD  0
          SetProxyBehaviorForUpdateDetection                     REG_DWORD  0 (1 with -AllowUserProxyFallback)
        HKLM\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU
          UseWUServer                                            REG_DWORD  1
      Enable client-side targeting (only with -TargetGroup)
        ...\WindowsUpdate  TargetGroupEnabled REG_DWORD 1, TargetGroup REG_SZ
      Do not connect to any Windows Update Internet locations (only with -NoInternet)
        ...\WindowsUpdate  DoNotConnectToWindowsUpdateInternetLocations REG_DWORD 1
      Delivery Optimization > Download Mode (unless -SkipDownloadMode)
        HKLM\SOFTWARE\Policies\Microsoft\Windows\DeliveryOptimization
          DODownloadMode REG_DWORD -DownloadMode (default 0)

    "Configure Automatic Updates", the detection frequency and the restart policies are left as
    they are.

    Before changing anything the script checks that the server answers a WSUS GetConfig call
    (skip with -SkipConnectionTest); a failure is only a warning.

    It records every value it changes, with the value that was there before, under
    HKLM\SOFTWARE\wsus-edge\Set-WsusEdgeClient. Running it again with other parameters changes
    only what differs (and undoes values of the earlier run that are no longer asked for);
    -Remove restores the earlier values and deletes the ones it added.

    On a domain-joined computer, a GPO that configures the same policies overwrites these values
    at the next Group Policy refresh.

.PARAMETER Server
    The intranet update service: scheme, host and port only, e.g. http://branch01.contoso.com:8530
    (HTTP) or https://branch01.contoso.com:8531 (HTTPS; the node's certificate must be trusted by
    this computer and name this host). Written to WUServer.

.PARAMETER StatusServer
    The intranet statistics server (WUStatusServer), where the client sends its reports.
    Default: the same as -Server, which is what a wsus-edge node expects.

.PARAMETER AlternateDownloadServer
    An alternate download server (UpdateServiceUrlAlternate): the client downloads update files
    from it instead of from -Server. Leave it out when the client scans its branch node; use it
    when the client scans another server but should download from a wsus-edge node.

.PARAMETER TargetGroup
    Client-side targeting: one or more target group names separated by semicolons, e.g.
    'Pilot;Workstations'. Sets TargetGroupEnabled = 1 and TargetGroup. The names must exist on the
    node (on a branch: on its upstream); unknown names are ignored and a computer without a known
    group is in Unassigned Computers.

.PARAMETER DownloadMode
    Delivery Optimization download mode (DODownloadMode). Default 0 (HTTP only, no peering): the
    node is the branch's cache already, and on a test machine every byte should come from the
    node so that the node's logs and counters show the download. 99 (Simple) for machines without
    Internet access; 1 (LAN) or 2 (Group) to allow peering; 100 (Bypass, BITS) is deprecated on
    Windows 11. 3 (Internet peering) is not offered: it does not suit managed branch clients.

.PARAMETER SkipDownloadMode
    Leave the Delivery Optimization policy alone.

.PARAMETER NoInternet
    Also set "Do not connect to any Windows Update Internet locations"
    (DoNotConnectToWindowsUpdateInternetLocations = 1): the client uses the node only.

.PARAMETER AllowUserProxyFallback
    Set SetProxyBehaviorForUpdateDetection = 1: allow the signed-in user's proxy as a fall-back
    for scans. Not recommended; a branch node is normally reached without a proxy.

.PARAMETER SkipConnectionTest
    Do not test the server before changing the registry.

.PARAMETER NoScan
    Do not start a scan at the end.

.PARAMETER WaitForScan
    Instead of starting a background scan with UsoClient, search for updates through the Windows
    Update Agent API against the managed server, wait for the result and print it (the updates
    found, or the error code).

.PARAMETER Remove
    Restore the values this script changed on an earlier run and delete the ones it added, then
    restart the Windows Update service. Values set by Group Policy are not touched.

.EXAMPLE
    .\Set-WsusEdgeClient.ps1 -Server http://branch01.contoso.com:8530 -WhatIf

    Shows what would be changed, without changing anything.

.EXAMPLE
    .\Set-WsusEdgeClient.ps1 -Server http://branch01.contoso.com:8530 -WaitForScan

    Points the client at the node over HTTP, and waits for a scan against it.

.EXAMPLE
    .\Set-WsusEdgeClient.ps1 -Server https://branch01.contoso.com:8531 -TargetGroup 'Pilot;Workstations' -NoInternet -DownloadMode 99

    HTTPS scans, client-side targeting, no fall-back to Microsoft's servers, Delivery
    Optimization without peering and without its cloud service.

.EXAMPLE
    .\Set-WsusEdgeClient.ps1 -Remove

    Puts back what was there before the first run.

.NOTES
    Windows PowerShell 5.1 or PowerShell 7, elevated. Guide: README.md in this folder.
#>
[CmdletBinding(SupportsShouldProcess, DefaultParameterSetName = 'Set')]
param(
    [Parameter(Mandatory, Position = 0, ParameterSetName = 'Set')]
    [ValidateNotNullOrEmpty()]
    [string] $Server,

    [Parameter(ParameterSetName = 'Set')]
    [ValidateNotNullOrEmpty()]
    [string] $StatusServer,

    [Parameter(ParameterSetName = 'Set')]
    [ValidateNotNullOrEmpty()]
    [string] $AlternateDownloadServer,

    [Parameter(ParameterSetName = 'Set')]
    [ValidateNotNullOrEmpty()]
    [string] $TargetGroup,

    [Parameter(ParameterSetName = 'Set')]
    [ValidateSet(0, 1, 2, 99, 100)]
    [int] $DownloadMode = 0,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $SkipDownloadMode,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $NoInternet,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $AllowUserProxyFallback,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $SkipConnectionTest,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $NoScan,

    [Parameter(ParameterSetName = 'Set')]
    [switch] $WaitForScan,

    [Parameter(Mandatory, ParameterSetName = 'Remove')]
    [switch] $Remove
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$PolicyRoot = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows'
# Short ids of the policy keys, in the order empty keys are deleted (a child before its parent).
$KeyPaths = [ordered]@{
    AU = "$PolicyRoot\WindowsUpdate\AU"
    WU = "$PolicyRoot\WindowsUpdate"
    DO = "$PolicyRoot\DeliveryOptimization"
}
# What this script changed, and what was there before.
$StatePath = 'HKLM:\SOFTWARE\wsus-edge\Set-WsusEdgeClient'
$StateBackupPath = "$StatePath\Backup"

# --- helpers (no side effects unless their name says so) ------------------------------------

function ConvertTo-ServerUrl {
    # The URL as the policy wants it, scheme://host[:port] without a path; throws when it is not.
    param(
        [Parameter(Mandatory)] [string] $Url,
        [Parameter(Mandatory)] [string] $ParameterName
    )
    $text = $Url.Trim()
    $uri = $null
    $example = 'http://branch01.contoso.com:8530'
    if (-not [Uri]::TryCreate($text, [UriKind]::Absolute, [ref] $uri) -or
        $uri.Scheme -notin @('http', 'https') -or [string]::IsNullOrEmpty($uri.Host)) {
        throw "-${ParameterName}: '$Url' is not an http:// or https:// URL such as $example."
    }
    if ($uri.UserInfo) {
        throw "-${ParameterName}: '$Url' carries a user name; the policy takes scheme://host:port only."
    }
    if ($uri.AbsolutePath -ne '/' -or $uri.Query -or $uri.Fragment) {
        throw ("-${ParameterName}: '$Url' has a path, query or fragment. Give scheme://host:port only " +
            "($example): the client adds /ClientWebService/client.asmx and the other service paths itself.")
    }
    if ($text -notmatch '^[a-zA-Z]+://(\[[^\]]+\]|[^/\[\]:]+):\d+/?$') {
        Write-Warning ("-${ParameterName}: '$Url' names no port, so clients use $($uri.Port). " +
            'wsus-edge listens on 8530 (HTTP) and, when HTTPS is set up, 8531.')
    }
    elseif ($uri.Scheme -eq 'https' -and $uri.Port -eq 8530) {
        Write-Warning "-${ParameterName}: https on port 8530; a wsus-edge node serves HTTPS on 8531 and plain HTTP on 8530."
    }
    elseif ($uri.Scheme -eq 'http' -and $uri.Port -eq 8531) {
        Write-Warning "-${ParameterName}: http on port 8531; a wsus-edge node serves plain HTTP on 8530 and HTTPS on 8531."
    }
    # Authority: the host, and the port when it is not the scheme's default.
    '{0}://{1}' -f $uri.Scheme, $uri.Authority
}

function Split-ValueId {
    # 'AU:UseWUServer' -> the key path and the value name.
    param([Parameter(Mandatory)] [string] $Id)
    $keyId, $name = $Id.Split(':', 2)
    [pscustomobject]@{ Path = $KeyPaths[$keyId]; Name = $name; Display = "$($KeyPaths[$keyId])\$name" }
}

function Get-RegistryValue {
    # The value as it is now, @{Kind; Data}, or $null when it does not exist.
    param([Parameter(Mandatory)] [string] $Path, [Parameter(Mandatory)] [string] $Name)
    if (-not (Test-Path -LiteralPath $Path)) { return $null }
    $key = Get-Item -LiteralPath $Path
    if ($key.GetValueNames() -notcontains $Name) { return $null }
    [pscustomobject]@{
        Kind = $key.GetValueKind($Name).ToString()
        Data = $key.GetValue($Name, $null, 'DoNotExpandEnvironmentNames')
    }
}

function Test-SameValue {
    param($Current, [Parameter(Mandatory)] $Wanted)
    if ($null -eq $Current -or $Current.Kind -ne $Wanted.Kind) { return $false }
    if ($Wanted.Kind -eq 'String') { return [string] $Current.Data -ceq [string] $Wanted.Data }
    return $Current.Data -eq $Wanted.Data
}

function Format-RegistryData {
    param($Value)
    if ($null -eq $Value) { return '(absent)' }
    if ($Value.Kind -in @('String', 'ExpandString')) { return "$($Value.Kind) '$($Value.Data)'" }
    if ($Value.Kind -eq 'MultiString') { return "$($Value.Kind) '$(@($Value.Data) -join ';')'" }
    return "$($Value.Kind) $($Value.Data)"
}

function Write-RegistryValue {
    # Creates the key when needed. Callers ask ShouldProcess first.
    param(
        [Parameter(Mandatory)] [string] $Path,
        [Parameter(Mandatory)] [string] $Name,
        [Parameter(Mandatory)] $Value
    )
    if (-not (Test-Path -LiteralPath $Path)) {
        New-Item -Path $Path -Force -Confirm:$false -WhatIf:$false | Out-Null
    }
    New-ItemProperty -LiteralPath $Path -Name $Name -PropertyType $Value.Kind -Value $Value.Data `
        -Force -Confirm:$false -WhatIf:$false | Out-Null
}

function Get-State {
    # What earlier runs changed: Managed (value ids), CreatedKeys (key ids), Backup (id -> value).
    $state = [pscustomobject]@{
        Managed     = New-Object System.Collections.Generic.List[string]
        CreatedKeys = New-Object System.Collections.Generic.List[string]
        Backup      = @{}
    }
    if (Test-Path -LiteralPath $StatePath) {
        $key = Get-Item -LiteralPath $StatePath
        foreach ($id in @($key.GetValue('Managed', @()))) { $state.Managed.Add($id) }
        foreach ($id in @($key.GetValue('CreatedKeys', @()))) { $state.CreatedKeys.Add($id) }
        if (Test-Path -LiteralPath $StateBackupPath) {
            $backup = Get-Item -LiteralPath $StateBackupPath
            foreach ($name in $backup.GetValueNames()) {
                $state.Backup[$name] = [pscustomobject]@{
                    Kind = $backup.GetValueKind($name).ToString()
                    Data = $backup.GetValue($name, $null, 'DoNotExpandEnvironmentNames')
                }
            }
        }
    }
    $state
}

function Save-State {
    # Writes the record (or deletes it when nothing is managed any more). Part of an action the
    # caller already confirmed.
    param([Parameter(Mandatory)] $State)
    if ($State.Managed.Count -eq 0 -and $State.CreatedKeys.Count -eq 0) {
        if (Test-Path -LiteralPath $StatePath) {
            Remove-Item -LiteralPath $StatePath -Recurse -Force -Confirm:$false -WhatIf:$false
        }
        $parent = Split-Path -Path $StatePath -Parent
        if ((Test-Path -LiteralPath $parent) -and -not (Get-ChildItem -LiteralPath $parent) -and
            (Get-Item -LiteralPath $parent).ValueCount -eq 0) {
            Remove-Item -LiteralPath $parent -Force -Confirm:$false -WhatIf:$false
        }
        return
    }
    if (Test-Path -LiteralPath $StatePath) {
        Remove-Item -LiteralPath $StatePath -Recurse -Force -Confirm:$false -WhatIf:$false
    }
    New-Item -Path $StatePath -Force -Confirm:$false -WhatIf:$false | Out-Null
    foreach ($list in @('Managed', 'CreatedKeys')) {
        $items = $State.$list
        if ($items.Count -gt 0) {
            New-ItemProperty -LiteralPath $StatePath -Name $list -PropertyType MultiString `
                -Value ([string[]] $items.ToArray()) -Force -Confirm:$false -WhatIf:$false | Out-Null
        }
    }
    New-ItemProperty -LiteralPath $StatePath -Name 'Updated' -PropertyType String `
        -Value ((Get-Date).ToString('o')) -Force -Confirm:$false -WhatIf:$false | Out-Null
    if ($State.Backup.Count -gt 0) {
        New-Item -Path $StateBackupPath -Force -Confirm:$false -WhatIf:$false | Out-Null
        foreach ($id in $State.Backup.Keys) {
            $value = $State.Backup[$id]
            New-ItemProperty -LiteralPath $StateBackupPath -Name $id -PropertyType $value.Kind `
                -Value $value.Data -Force -Confirm:$false -WhatIf:$false | Out-Null
        }
    }
}

function Undo-ManagedValue {
    # Puts back the value from before the first run (or deletes it); $true when done.
    [CmdletBinding(SupportsShouldProcess)]
    param([Parameter(Mandatory)] [string] $Id, [Parameter(Mandatory)] $State)
    $target = Split-ValueId $Id
    $current = Get-RegistryValue -Path $target.Path -Name $target.Name
    if ($State.Backup.ContainsKey($Id)) {
        $previous = $State.Backup[$Id]
        if (Test-SameValue -Current $current -Wanted $previous) { return $true }
        if (-not $PSCmdlet.ShouldProcess($target.Display, "Restore previous value $(Format-RegistryData $previous)")) {
            return $false
        }
        Write-RegistryValue -Path $target.Path -Name $target.Name -Value $previous
        return $true
    }
    if ($null -eq $current) { return $true }
    if (-not $PSCmdlet.ShouldProcess($target.Display, 'Remove value (it did not exist before)')) { return $false }
    Remove-ItemProperty -LiteralPath $target.Path -Name $target.Name -Force -Confirm:$false -WhatIf:$false
    return $true
}

function Get-InnermostException {
    param([Parameter(Mandatory)] [System.Exception] $Exception)
    $e = $Exception
    while ($null -ne $e.InnerException) { $e = $e.InnerException }
    $e
}

function Test-WsusEndpoint {
    # TCP connect, then a WSUS GetConfig call (MS-WUSP 2.2.2.2.1) without a proxy, as a branch
    # client on the LAN makes it. Returns $true when the answer is a GetConfig result.
    param([Parameter(Mandatory)] [string] $Url)
    $uri = [Uri] $Url
    $tcp = New-Object System.Net.Sockets.TcpClient
    try {
        if (-not $tcp.ConnectAsync($uri.DnsSafeHost, $uri.Port).Wait(5000)) {
            Write-Warning "${Url}: no TCP connection to $($uri.DnsSafeHost):$($uri.Port) within 5 s (firewall, or the node is not listening)."
            return $false
        }
    }
    catch {
        Write-Warning "${Url}: cannot connect to $($uri.DnsSafeHost):$($uri.Port): $((Get-InnermostException $_.Exception).Message)"
        return $false
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
        # Windows PowerShell may not offer TLS 1.2 by default (0 = the system's default, fine).
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
        $reader = New-Object System.IO.StreamReader($response.GetResponseStream())
        $text = $reader.ReadToEnd()
        if ($text -match 'GetConfigResult') {
            Write-Host "${Url}: answers as a WSUS server (GetConfig)."
            return $true
        }
        Write-Warning "${Url}: answered, but not with a GetConfig result: is it a WSUS / wsus-edge server?"
        return $false
    }
    catch {
        $inner = Get-InnermostException $_.Exception
        $hint = ''
        if ($uri.Scheme -eq 'https' -and ($inner -is [System.Security.Authentication.AuthenticationException] -or
                $inner.Message -match 'trust|certificate|SSL|TLS')) {
            $hint = ' Check that the CA is in Cert:\LocalMachine\Root and that the certificate names this host (README.md section 4).'
        }
        Write-Warning "${Url}: GetConfig failed: $($inner.Message)$hint"
        return $false
    }
    finally {
        if ($null -ne $response) { $response.Close() }
        [System.Net.ServicePointManager]::SecurityProtocol = $savedProtocols
    }
}

function Restart-WindowsUpdateService {
    [CmdletBinding(SupportsShouldProcess)]
    param()
    $service = Get-Service -Name wuauserv
    if ($service.StartType -eq 'Disabled') {
        Write-Warning 'The Windows Update service (wuauserv) is disabled: no scan will run until it is enabled.'
        return
    }
    if ($PSCmdlet.ShouldProcess('Windows Update service (wuauserv)', 'Restart')) {
        try {
            Restart-Service -Name wuauserv -Force -Confirm:$false -WhatIf:$false
        }
        catch {
            Write-Warning "Could not restart wuauserv: $($_.Exception.Message)"
        }
    }
}

function Start-UpdateScan {
    [CmdletBinding(SupportsShouldProcess)]
    param()
    $uso = Join-Path $env:SystemRoot 'System32\UsoClient.exe'
    if (Test-Path -LiteralPath $uso) {
        if ($PSCmdlet.ShouldProcess('Windows Update', 'Start a scan (UsoClient.exe StartScan)')) {
            & $uso StartScan
            Write-Host 'Scan started in the background (UsoClient.exe StartScan); it prints nothing.'
        }
        return
    }
    if ($PSCmdlet.ShouldProcess('Windows Update', 'Start a scan (wuauclt.exe /detectnow)')) {
        & (Join-Path $env:SystemRoot 'System32\wuauclt.exe') /detectnow
        Write-Host 'Scan started in the background (wuauclt.exe /detectnow).'
    }
}

function Invoke-ManagedServerSearch {
    # A synchronous search against the managed (WSUS / wsus-edge) server through the WUA API.
    [CmdletBinding(SupportsShouldProcess)]
    param()
    if (-not $PSCmdlet.ShouldProcess('Windows Update', 'Search for updates on the managed server and wait')) { return }
    $session = New-Object -ComObject Microsoft.Update.Session
    $session.ClientApplicationID = 'Set-WsusEdgeClient'
    $searcher = $session.CreateUpdateSearcher()
    $searcher.ServerSelection = 1   # ssManagedServer
    Write-Host 'Searching for updates on the managed server (this can take a few minutes)...'
    $started = Get-Date
    try {
        $result = $searcher.Search('IsInstalled=0 and IsHidden=0')
    }
    catch {
        $inner = Get-InnermostException $_.Exception
        Write-Warning ('The search failed with 0x{0:X8}: {1} (README.md section 5 lists the usual codes).' -f $inner.HResult, $inner.Message)
        return
    }
    $codes = @{ 0 = 'not started'; 1 = 'in progress'; 2 = 'succeeded'; 3 = 'succeeded with errors'; 4 = 'failed'; 5 = 'aborted' }
    $seconds = [int] ((Get-Date) - $started).TotalSeconds
    Write-Host ("Search {0} in {1} s: {2} update(s) not installed." -f $codes[[int] $result.ResultCode], $seconds, $result.Updates.Count)
    foreach ($update in $result.Updates) { Write-Host "  $($update.Title)" }
}

function Show-HowToCheck {
    param([string] $ServerUrl)
    $clientId = $null
    $wuKey = Get-RegistryValue -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate' -Name 'SusClientId'
    if ($null -ne $wuKey) { $clientId = $wuKey.Data }
    if (-not $clientId) { $clientId = '<SusClientId, known after the first scan>' }
    $here = $PSScriptRoot
    if (-not $here) { $here = '.' }
    Write-Host ''
    Write-Host 'How to check:'
    Write-Host "  this computer   $(Join-Path $here 'Get-WsusEdgeClientStatus.ps1') -TestConnection"
    Write-Host '                  Get-WindowsUpdateLog -LogPath $env:TEMP\WindowsUpdate.log; then search it for'
    Write-Host "                  '$ServerUrl', 'SyncUpdates', 'ServiceUrl', 'FAILED'"
    Write-Host '                  Get-WinEvent -LogName Microsoft-Windows-WindowsUpdateClient/Operational -MaxEvents 20'
    Write-Host "  on the node     wsus-edge status"
    Write-Host "                  curl -s http://127.0.0.1:8540/api/v1/computers/$clientId"
    Write-Host "                  status pages: http://127.0.0.1:8540/computers/$clientId (admin listener, loopback by default)"
    Write-Host '  The computer appears on the node after its first scan; its update states after its first reports (a few minutes later).'
}

function Test-DomainJoined {
    try { return [bool] (Get-CimInstance -ClassName Win32_ComputerSystem).PartOfDomain }
    catch { return $false }
}

# --- -Remove ----------------------------------------------------------------------------------

if ($PSCmdlet.ParameterSetName -eq 'Remove') {
    $state = Get-State
    if ($state.Managed.Count -eq 0 -and $state.CreatedKeys.Count -eq 0) {
        Write-Warning ("Nothing to remove: there is no record of an earlier run ($StatePath). " +
            'Values set by Group Policy are removed by the GPO (Not Configured), not by this script.')
        return
    }
    # Undo in the reverse order of setting.
    $ids = $state.Managed.ToArray()
    [array]::Reverse($ids)
    foreach ($id in $ids) {
        if ((Undo-ManagedValue -Id $id -State $state) -and -not $WhatIfPreference) {
            [void] $state.Managed.Remove($id)
            [void] $state.Backup.Remove($id)
        }
    }
    foreach ($keyId in @($KeyPaths.Keys)) {
        if ($state.CreatedKeys -notcontains $keyId) { continue }
        $path = $KeyPaths[$keyId]
        $gone = -not (Test-Path -LiteralPath $path)
        if (-not $gone) {
            $key = Get-Item -LiteralPath $path
            if ($key.ValueCount -gt 0 -or $key.SubKeyCount -gt 0) {
                Write-Verbose "Keeping $path`: it holds other values now."
                $gone = $true
            }
            elseif ($PSCmdlet.ShouldProcess($path, 'Remove empty key (created by an earlier run)')) {
                Remove-Item -LiteralPath $path -Force -Confirm:$false -WhatIf:$false
                $gone = $true
            }
        }
        if ($gone -and -not $WhatIfPreference) { [void] $state.CreatedKeys.Remove($keyId) }
    }
    if ($WhatIfPreference) {
        Restart-WindowsUpdateService
        return
    }
    Save-State -State $state
    Restart-WindowsUpdateService
    if ($state.Managed.Count -gt 0) {
        Write-Warning "Some values were left in place (declined); they stay recorded in $StatePath."
    }
    else {
        Write-Host ('Removed the settings of Set-WsusEdgeClient.ps1. Group Policy settings, if any, ' +
            'apply again from the next refresh (gpupdate /target:computer /force).')
    }
    return
}

# --- set --------------------------------------------------------------------------------------

$serverUrl = ConvertTo-ServerUrl -Url $Server -ParameterName 'Server'
$statusUrl = $serverUrl
if ($PSBoundParameters.ContainsKey('StatusServer')) {
    $statusUrl = ConvertTo-ServerUrl -Url $StatusServer -ParameterName 'StatusServer'
    if (([Uri] $statusUrl).Host -ne ([Uri] $serverUrl).Host) {
        Write-Warning 'The statistics server is another host than the update server: a wsus-edge node knows the update states of the computers that report to it.'
    }
}
$alternateUrl = ''
if ($PSBoundParameters.ContainsKey('AlternateDownloadServer')) {
    $alternateUrl = ConvertTo-ServerUrl -Url $AlternateDownloadServer -ParameterName 'AlternateDownloadServer'
}
$groups = $null
if ($PSBoundParameters.ContainsKey('TargetGroup')) {
    $names = @($TargetGroup.Split(';') | ForEach-Object { $_.Trim() } | Where-Object { $_ })
    if ($names.Count -eq 0) { throw "-TargetGroup: '$TargetGroup' holds no group name." }
    $groups = $names -join ';'
}

# The values this run wants, in the order they are written.
$dword = { param($Data) [pscustomobject]@{ Kind = 'DWord'; Data = [int] $Data } }
$string = { param($Data) [pscustomobject]@{ Kind = 'String'; Data = [string] $Data } }
$wanted = [ordered]@{}
$wanted['WU:WUServer'] = & $string $serverUrl
$wanted['WU:WUStatusServer'] = & $string $statusUrl
$wanted['WU:UpdateServiceUrlAlternate'] = & $string $alternateUrl
$wanted['WU:FillEmptyContentUrls'] = & $dword 0
$wanted['WU:DoNotEnforceEnterpriseTLSCertPinningForUpdateDetection'] = & $dword 0
$wanted['WU:SetProxyBehaviorForUpdateDetection'] = & $dword ([int] $AllowUserProxyFallback.IsPresent)
if ($null -ne $groups) {
    $wanted['WU:TargetGroupEnabled'] = & $dword 1
    $wanted['WU:TargetGroup'] = & $string $groups
}
if ($NoInternet) {
    $wanted['WU:DoNotConnectToWindowsUpdateInternetLocations'] = & $dword 1
}
if (-not $SkipDownloadMode) {
    $wanted['DO:DODownloadMode'] = & $dword $DownloadMode
}
# Last: UseWUServer turns the rest on.
$wanted['AU:UseWUServer'] = & $dword 1

if (Test-DomainJoined) {
    Write-Warning 'This computer is domain-joined: a GPO that configures the same Windows Update policies overwrites these values at the next policy refresh.'
}

if (-not $SkipConnectionTest) {
    $urls = @($serverUrl)
    if ($statusUrl -ne $serverUrl) { $urls += $statusUrl }
    if ($alternateUrl) { $urls += $alternateUrl }
    foreach ($url in $urls) { [void] (Test-WsusEndpoint -Url $url) }
}

$state = Get-State
$changed = $false   # something was written (or, with -WhatIf, would be)

# Values an earlier run set that this run no longer asks for go back to what they were.
foreach ($id in @($state.Managed.ToArray())) {
    if ($wanted.Contains($id)) { continue }
    $changed = $true
    if ((Undo-ManagedValue -Id $id -State $state) -and -not $WhatIfPreference) {
        [void] $state.Managed.Remove($id)
        [void] $state.Backup.Remove($id)
        Save-State -State $state
    }
}

foreach ($id in $wanted.Keys) {
    $target = Split-ValueId $id
    $value = $wanted[$id]
    $current = Get-RegistryValue -Path $target.Path -Name $target.Name
    if (Test-SameValue -Current $current -Wanted $value) {
        Write-Verbose "$($target.Display) is already $(Format-RegistryData $value)."
        continue
    }
    $action = "Set $(Format-RegistryData $value) (now $(Format-RegistryData $current))"
    if ($WhatIfPreference) { $changed = $true }
    if (-not $PSCmdlet.ShouldProcess($target.Display, $action)) { continue }

    if ($state.Managed -notcontains $id) {
        if ($null -ne $current) { $state.Backup[$id] = $current }
        $state.Managed.Add($id)
    }
    foreach ($keyId in @($KeyPaths.Keys)) {
        if ($target.Path.StartsWith($KeyPaths[$keyId], [StringComparison]::OrdinalIgnoreCase) -and
            -not (Test-Path -LiteralPath $KeyPaths[$keyId]) -and $state.CreatedKeys -notcontains $keyId) {
            $state.CreatedKeys.Add($keyId)
        }
    }
    # Record first, so that an interruption leaves nothing unrecorded.
    Save-State -State $state
    Write-RegistryValue -Path $target.Path -Name $target.Name -Value $value
    $changed = $true
}

if ($changed) {
    Restart-WindowsUpdateService
}
elseif (-not $WhatIfPreference) {
    Write-Host 'All values were already set; nothing changed.'
}

if ($WaitForScan) {
    Invoke-ManagedServerSearch
}
elseif (-not $NoScan) {
    Start-UpdateScan
}

if (-not $WhatIfPreference) {
    Show-HowToCheck -ServerUrl $serverUrl
}
