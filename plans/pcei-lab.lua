--[[
pcei-lab - one orchestrator, three providers, one MEC application: the
white paper's figure 37 (Public Cloud - Edge Interface) on the local lab.

  public cloud       an S3 bucket holding the application artefact: the
                     Location API's container image, copied from where the
                     build published it (public-cloud/aws-s3, source_url)
  interconnect       a virtual connection of the interconnection provider
                     between the edge's port and the cloud's port
                     (interconnect/fabric), then a VXLAN overlay between the
                     edge site and the cloud gateway site (interconnect/overlay);
                     each site records what it is attached to (bare-metal/ssh-host)
  edge cloud         the edge site's container host imports the image from
                     the bucket and runs the MEC 013 Location API
                     (edge-cloud/containers), in the edge site's network
                     namespace: reachable on the site's address and, from the
                     cloud gateway, across the interconnect

Order: the sites and the overlay wait for the provider's connection, the
application for the artefact in the bucket, the overlay and the edge site
(depends_on: the modules involved take plain strings, so these are not
references).  What changes follows the values: a new application version
(app_version) touches the object, the image and the container and nothing
else; a new bandwidth the provider's connection only; a new VLAN the
connection and the two sites' attachment files.

Domains can be switched off where the machine cannot run them
(enable_public_cloud, enable_sites, enable_app; examples/pcei/run.sh does
so and says why); the interconnection provider's part always runs.
Every value comes from variables; examples/pcei/run.sh starts the lab's
peers and passes them.  See examples/pcei/README.md.

  mecorch apply plans/pcei-lab.lua --var-file lab.json
]]

-- ---- which domains run ----------------------------------------------------

-- Where the in-tree modules come from: ../iac-modules by default, or this
-- project's own repository as a git source, e.g.
-- git+file:///src/mecorch//iac-modules?ref=<commit> (examples/pcei/run.sh
-- passes that when the modules' tree has no uncommitted changes).
local modules = variable("modules", {
  type = "string", default = "../iac-modules",
  description = "base of the in-tree modules: a path, or a git URL ending in //iac-modules[?ref=...]",
})
local function mod(path)
  local base, query = modules:match("^(.-)(%?.*)$")
  if not base then base, query = modules, "" end
  return base .. "/" .. path .. query
end

local enable_public_cloud = variable("enable_public_cloud", {
  type = "boolean", default = true,
  description = "the bucket and the artefact in it (the application needs them)",
})
local enable_sites = variable("enable_sites", {
  type = "boolean", default = true,
  description = "the edge and cloud gateway sites (over SSH) and the overlay between them",
})
local enable_app = variable("enable_app", {
  type = "boolean", default = true,
  description = "the edge container host and the MEC application",
})
local lab_id = variable("lab_id", {
  type = "string", default = "pcei-lab",
  description = "label pcei.lab put on every image and container",
})

-- ---- public cloud (S3) -----------------------------------------------------

local s3_endpoint = variable("s3_endpoint", {
  type = "string", default = "", description = "S3 API endpoint (requests are signed)",
})
local s3_public_endpoint = variable("s3_public_endpoint", {
  type = "string", default = "",
  description = "where the edge host downloads objects from without credentials "
    .. "(default: s3_endpoint)",
})
local s3_region = variable("s3_region", { type = "string", default = "us-east-1" })
local s3_access_key = variable("s3_access_key", { type = "string", default = "", sensitive = true })
local s3_secret_key = variable("s3_secret_key", { type = "string", default = "", sensitive = true })
local bucket = variable("bucket", { type = "string", default = "pcei-artefacts" })
local releases = variable("releases", {
  type = "map", default = {},
  description = "application version -> { url = where the build published the image tarball, "
    .. "sha256 = its SHA-256 }",
})
local app_version = variable("app_version", {
  type = "string", default = "1", description = "the release of `releases` to deploy",
})

-- ---- interconnection provider ----------------------------------------------

local fabric_endpoint = variable("fabric_endpoint", {
  type = "string", description = "the interconnection provider's API",
})
local fabric_token = variable("fabric_token", { type = "string", sensitive = true })
local edge_port = variable("edge_port", { type = "string", default = "port-1",
  description = "the provider's port at the edge site" })
local cloud_port = variable("cloud_port", { type = "string", default = "port-2",
  description = "the provider's port at the cloud on-ramp" })
local vlan = variable("vlan", { type = "integer", default = 310,
  description = "the connection's VLAN on both ports" })
local bandwidth = variable("bandwidth_mbps", { type = "integer", default = 500 })
local fabric_poll_ms = variable("fabric_poll_ms", { type = "integer", default = 5000 })

-- ---- the two sites and the overlay ------------------------------------------

local site_user = variable("site_user", { type = "string", default = "" })
local site_key_file = variable("site_key_file", { type = "string", default = "" })
local function site(tag, what)
  return {
    host = variable(tag .. "_host", { type = "string", default = "",
      description = what .. ": sshd address" }),
    fp = variable(tag .. "_fp", { type = "string", default = "",
      description = what .. ": host key fingerprint, SHA256:..." }),
    root = variable(tag .. "_root", { type = "string", default = "",
      description = what .. ": directory for the managed files" }),
    dev = variable(tag .. "_dev", { type = "string", default = "eth0",
      description = what .. ": underlay device" }),
  }
end
local EDGE = site("edge", "edge site")
local CGW = site("cgw", "cloud gateway site")
local edge_netns = variable("edge_netns", {
  type = "string", default = "",
  description = "the edge site's network namespace: the application runs in it (empty: a bridge "
    .. "network with a port on 127.0.0.1)",
})
local vni = variable("vni", { type = "integer", default = 4210 })
local edge_overlay = variable("edge_overlay", { type = "string", default = "10.250.210.1/24" })
local cgw_overlay = variable("cgw_overlay", { type = "string", default = "10.250.210.2/24" })

-- ---- the edge container host ------------------------------------------------

local podman_socket = variable("podman_socket", { type = "string", default = "",
  description = "the edge host's Docker Engine API socket (podman)" })
local app_port = variable("app_port", { type = "integer", default = 18081,
  description = "host port of the application without an edge site (bridge network)" })

-- ---- checks -------------------------------------------------------------------

local release = releases[app_version]
if enable_public_cloud and s3_endpoint == "" then
  error("enable_public_cloud needs s3_endpoint, s3_access_key and s3_secret_key", 0)
end
if enable_app then
  if not enable_public_cloud then
    error("enable_app needs enable_public_cloud: the application's image comes from the bucket", 0)
  end
  if type(release) ~= "table" or type(release.url) ~= "string"
      or type(release.sha256) ~= "string" then
    error("app_version " .. app_version .. " is not in `releases` (want { url =, sha256 = })", 0)
  end
  if podman_socket == "" then
    error("enable_app needs podman_socket", 0)
  end
end
if enable_sites then
  local needed = { site_user, site_key_file, EDGE.host, EDGE.fp, EDGE.root,
                   CGW.host, CGW.fp, CGW.root }
  for _, v in ipairs(needed) do
    if v == "" then
      error("enable_sites needs site_user, site_key_file and edge_/cgw_ host, fp and root", 0)
    end
  end
end
local function address_of(cidr)
  return (string.match(cidr, "^([^/]+)"))
end

-- ---- public cloud: the artefact in a bucket ----------------------------------

local ARTEFACT_KEY = "location-api/rootfs.tar"
-- The URL the edge host downloads the artefact from, without credentials.
local artefact_download = (s3_public_endpoint ~= "" and s3_public_endpoint or s3_endpoint)
  .. "/" .. bucket .. "/" .. ARTEFACT_KEY
local has_artefact = enable_public_cloud and type(release) == "table"
local cloud
if enable_public_cloud then
  local objects = {}
  if has_artefact then
    objects.app = {
      bucket = "artefacts", key = ARTEFACT_KEY,
      source_url = release.url, source_sha256 = release.sha256,
      content_type = "application/x-tar",
      tags = { app = "location-api", version = app_version },
    }
  end
  cloud = module("cloud", {
    source = mod("public-cloud/aws-s3"),
    inputs = {
      endpoint = s3_endpoint,
      region = s3_region,
      access_key = s3_access_key,
      secret_key = s3_secret_key,
      buckets = { artefacts = { name = bucket } },
      objects = objects,
    },
  })
end

-- ---- interconnect: the provider's connection ---------------------------------

local CONNECTION = "edge-to-cloud"
local fabric = module("fabric", {
  source = mod("interconnect/fabric"),
  inputs = {
    endpoint = fabric_endpoint,
    token = fabric_token,
    poll_interval_ms = fabric_poll_ms,
    timeout_s = 120,
    connections = {
      [CONNECTION] = {
        a_side = { port_id = edge_port, vlan = vlan },
        z_side = { port_id = cloud_port, vlan = vlan },
        bandwidth_mbps = bandwidth,
      },
    },
  },
})

-- ---- the sites and the overlay between them -----------------------------------

local edge_site, cgw_site, overlay
local app_deps = {}
if enable_sites then
  -- What each site is attached to (the module takes plain strings only:
  -- the provider's connection is named, its id is in the outputs).
  local function attachment(role, s, port, local_cidr, peer_cidr)
    return {
      path = s.root .. "/pcei/attachment.conf",
      mode = "0644",
      content = "# written by mecorch (plans/pcei-lab.lua)\n"
        .. "role=" .. role .. "\n"
        .. "provider_connection=" .. CONNECTION .. "\n"
        .. "provider_port=" .. port .. "\n"
        .. "vlan=" .. vlan .. "\n"
        .. "overlay_vni=" .. vni .. "\n"
        .. "overlay_address=" .. local_cidr .. "\n"
        .. "overlay_peer=" .. address_of(peer_cidr) .. "\n",
    }
  end
  edge_site = module("edge_site", {
    source = mod("bare-metal/ssh-host"),
    inputs = {
      host = EDGE.host, user = site_user, key_file = site_key_file, host_key_sha256 = EDGE.fp,
      files = { attachment = attachment("edge", EDGE, edge_port, edge_overlay, cgw_overlay) },
    },
    depends_on = { fabric },
  })
  cgw_site = module("cloud_gateway", {
    source = mod("bare-metal/ssh-host"),
    inputs = {
      host = CGW.host, user = site_user, key_file = site_key_file, host_key_sha256 = CGW.fp,
      files = {
        attachment = attachment("cloud-gateway", CGW, cloud_port, cgw_overlay, edge_overlay),
      },
    },
    depends_on = { fabric },
  })
  -- The tenant's tunnel ends come up once the provider's circuit is there.
  overlay = module("overlay", {
    source = mod("interconnect/overlay"),
    inputs = {
      kind = "vxlan", name = "pcei" .. vni, vni = vni, user = site_user, key_file = site_key_file,
      sudo = true,
      a = { host = EDGE.host, host_key_sha256 = EDGE.fp, underlay = EDGE.host, dev = EDGE.dev,
            address = edge_overlay },
      b = { host = CGW.host, host_key_sha256 = CGW.fp, underlay = CGW.host, dev = CGW.dev,
            address = cgw_overlay },
    },
    depends_on = { fabric },
  })
  app_deps = { overlay, edge_site }
end
if cloud then
  table.insert(app_deps, 1, cloud)
end

-- ---- edge cloud: the MEC application -------------------------------------------

local APP = "pcei-location-api"
local edge, app_url, app_url_from_cloud
if enable_app then
  local container = {
    image = "location-api",
    restart = "unless-stopped",
    health = { test = "wget -q -O /dev/null http://127.0.0.1:8081/location/v2/queries/zones",
               interval_s = 2, timeout_s = 2, retries = 3 },
    wait_healthy_s = 30,
  }
  if enable_sites and edge_netns ~= "" then
    -- In the edge site's namespace: on the site's address, and on the
    -- overlay for the cloud side.
    container.network = "ns:/run/netns/" .. edge_netns
    app_url = "http://" .. EDGE.host .. ":8081/location/v2"
    app_url_from_cloud = "http://" .. address_of(edge_overlay) .. ":8081/location/v2"
  else
    container.ports = { ["8081"] = app_port }
    app_url = "http://127.0.0.1:" .. app_port .. "/location/v2"
  end
  edge = module("edge", {
    source = mod("edge-cloud/containers"),
    inputs = {
      socket = podman_socket,
      labels = { ["pcei.lab"] = lab_id },
      images = {
        ["location-api"] = {
          ref = "localhost/" .. APP .. ":latest",
          source = artefact_download,          -- from the bucket (depends_on: once it is there)
          sha256 = release.sha256,
          changes = { 'CMD ["/usr/local/bin/location-api"]', "EXPOSE 8081" },
        },
      },
      containers = { [APP] = container },
    },
    depends_on = app_deps,
  })
end

-- ---- outputs ------------------------------------------------------------------

local function skipped(flag)
  return "skipped (" .. flag .. " = false)"
end

output("app_url", app_url or skipped("enable_app"),
  { description = "the MEC application's Location API (MEC 013) root, from this machine" })
output("app_url_from_cloud", app_url_from_cloud or "none (the application is not in an edge site)",
  { description = "the same API seen from the cloud gateway site, across the interconnect" })
output("public_cloud", cloud and {
  bucket = cloud.bucket_arns.artefacts,
  artefact = has_artefact and cloud.object_urls.app or "none (no release to publish)",
  artefact_download = has_artefact and artefact_download or "none",
  artefact_etag = has_artefact and cloud.etags.app or "none",
} or skipped("enable_public_cloud"), { description = "what was created in the public cloud" })
output("interconnect", {
  provider_connection = fabric.ids[CONNECTION],
  provider_endpoint = fabric.endpoint,
  overlay_links = overlay and overlay.links or skipped("enable_sites"),
  site_files = enable_sites
    and { edge = edge_site.files.attachment, cloud_gateway = cgw_site.files.attachment }
    or skipped("enable_sites"),
}, { description = "what was created at the interconnection provider and on the sites" })
output("edge_cloud", edge and {
  image = edge.image_ids["location-api"],
  container = edge.container_ids[APP],
  placement = (enable_sites and edge_netns ~= "") and ("edge site namespace " .. edge_netns)
    or "bridge network, port on 127.0.0.1",
} or skipped("enable_app"), { description = "what was created at the edge cloud provider" })
