#!/bin/bash
# The project's OpenStack box (`make openstack-box`): a real OpenStack Zed control plane
# from Debian bookworm's packages with nova's fake virt driver, adapted from the
# workplace's shared openstack-box. Changes here: every daemon's command line is kept
# under $OSBOX/run so `health` can restart whatever died (MariaDB once died under a long
# session), `status` prints one line per service, and `ready` waits until nova sees a
# compute host and neutron a linuxbridge agent.
# Non-interactive. Services bound to 127.0.0.1. No systemd: processes started by hand.
set -euo pipefail
OSBOX=${OSBOX_DIR:-/tmp/osbox}
LOG=$OSBOX/logs; mkdir -p $LOG
export DEBIAN_FRONTEND=noninteractive
PHASE=${1:-all}
# Usage: bash setup.sh [all|install|configure|stop|status|health|ready|infra|keystone|glance_placement|nova|neutron|discover]
#   all = install + configure (bare machine -> running cloud).  Then: python3 smoke.py (beside this script)
# Key choices: nova compute_driver=fake.FakeDriver; nova-compute-ironic only satisfies the
#   'nova-compute-hypervisor' dependency without pulling libvirt/qemu (driver overridden to fake);
#   neutron ML2 tenant type 'local' + linuxbridge mech driver + real linuxbridge agent (noop firewall),
#   which is what makes port binding succeed (vif_type=bridge); [experimental] linuxbridge=true is required in Zed.
#   APIs run under uwsgi (keystone/glance/placement/nova-api), neutron-server under eventlet, all on 127.0.0.1.

phase_install() {
  # never let maintainer scripts start daemons (no init system here)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  # preseed openstack-pkg-tools / dbconfig questions: configure everything by hand
  for p in keystone glance-api glance-common placement-api placement-common nova-common nova-api \
           neutron-common neutron-api neutron-server neutron-rpc-server neutron-linuxbridge-agent; do
    cat <<D
$p configure_db boolean false
$p dbconfig-install boolean false
$p register-endpoint boolean false
$p configure_ksat boolean false
$p configure_rabbit boolean false
D
  done | sed 's#^\([^ ]*\) \([^ ]*\)#\1 \1/\2#' | debconf-set-selections
  cat <<D | debconf-set-selections
keystone keystone/create-admin-tenant boolean false
keystone keystone/configure_db boolean false
D
  apt-get update
  local t0=$(date +%s)
  apt-get install -y --no-install-recommends \
    mariadb-server python3-pymysql rabbitmq-server \
    keystone glance-api placement-api \
    nova-api nova-conductor nova-scheduler nova-compute nova-compute-ironic \
    neutron-server neutron-linuxbridge-agent \
    python3-openstackclient bridge-utils iproute2 iptables ebtables 2>&1 | tee $LOG/apt-install.log
  echo "apt install took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

PW=secret
KS=http://127.0.0.1:5000
RUN=$OSBOX/run; mkdir -p $RUN
authtoken() { # $1=user
cat <<A
[keystone_authtoken]
www_authenticate_uri = $KS
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PW
service_token_roles_required = true
A
}
ksauth() { # $1=section $2=user
cat <<A
[$1]
auth_url = $KS/v3
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $PW
region_name = RegionOne
A
}
# start a daemon in background, record pid
bg() { # name user cmd...  (the command is kept in $RUN/NAME.cmd for `health`)
  local name=$1 user=$2; shift 2
  printf '%q ' "$user" "$@" > $RUN/$name.cmd
  if [ "$user" = root ]; then
    setsid nohup "$@" > $LOG/$name.out 2>&1 < /dev/null &
  else
    setsid nohup runuser -u $user -- "$@" > $LOG/$name.out 2>&1 < /dev/null &
  fi
  echo $! > $RUN/$name.pid; echo "started $name pid $(cat $RUN/$name.pid)"
}
# One thread per uwsgi worker: the APIs are eventlet-patched, and a threaded worker
# deadlocks for good on "greenlet.error: cannot switch to a different thread" (seen here:
# keystone then holds every request sent to that worker, and clients without a timeout hang).
uw() { # name user port wsgi-file [extra ini from debian]
  local name=$1 user=$2 port=$3 wsgi=$4 ini=$5
  grep -vE '^\s*(processes|threads|plugins|apparmor-profile|logto)\s*=' $ini > $RUN/$name-uwsgi.ini
  cat >> $RUN/$name-uwsgi.ini <<U
plugins = python3
processes = ${UW_PROCESSES:-4}
threads = ${UW_THREADS:-1}
http-socket = 127.0.0.1:$port
logto = $LOG/$name.log
U
  bg $name root /usr/bin/uwsgi --ini $RUN/$name-uwsgi.ini
}
waitport() { for i in $(seq 1 120); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 1; done; echo "port $1 not up"; return 1; }

phase_infra() {
  local t0=$(date +%s)
  # MariaDB on 127.0.0.1
  printf '[mysqld]\nbind-address = 127.0.0.1\nmax_connections = 1000\ninnodb_buffer_pool_size = 256M\ncharacter-set-server = utf8mb4\ncollation-server = utf8mb4_general_ci\n' > /etc/mysql/mariadb.conf.d/99-openstack.cnf
  /etc/init.d/mariadb start
  for db in keystone glance placement nova_api nova nova_cell0 neutron; do
    mysql -e "CREATE DATABASE IF NOT EXISTS $db;"
  done
  for u in keystone glance placement nova neutron; do
    mysql -e "CREATE USER IF NOT EXISTS '$u'@'localhost' IDENTIFIED BY '$PW'; CREATE USER IF NOT EXISTS '$u'@'127.0.0.1' IDENTIFIED BY '$PW';"
  done
  for p in keystone:keystone glance:glance placement:placement nova:nova_api nova:nova nova:nova_cell0 neutron:neutron; do
    u=${p%%:*}; d=${p##*:}
    mysql -e "GRANT ALL ON $d.* TO '$u'@'localhost'; GRANT ALL ON $d.* TO '$u'@'127.0.0.1';"
  done
  # RabbitMQ on 127.0.0.1 (AMQP, epmd and distribution)
  cat > /etc/rabbitmq/rabbitmq-env.conf <<R
NODE_IP_ADDRESS=127.0.0.1
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_DIST_PORT=25672
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
R
  echo 'export ERL_EPMD_ADDRESS=127.0.0.1' > /etc/default/rabbitmq-server
  grep -q '^127.0.0.1.*localhost' /etc/hosts || echo '127.0.0.1 localhost' >> /etc/hosts
  export ERL_EPMD_ADDRESS=127.0.0.1
  bg rabbitmq rabbitmq /usr/sbin/rabbitmq-server
  waitport 5672
  rabbitmqctl -n rabbit@localhost await_startup >/dev/null 2>&1 || true
  rabbitmqctl -n rabbit@localhost add_user openstack $PW || true
  rabbitmqctl -n rabbit@localhost set_permissions openstack '.*' '.*' '.*'
  echo "infra took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

phase_keystone() {
  local t0=$(date +%s)
  [ -f /etc/keystone/keystone.conf.dist ] || cp /etc/keystone/keystone.conf /etc/keystone/keystone.conf.dist
  cat > /etc/keystone/keystone.conf <<C
[DEFAULT]
log_dir = /var/log/keystone
[database]
connection = mysql+pymysql://keystone:$PW@127.0.0.1/keystone
[token]
provider = fernet
C
  runuser -u keystone -- keystone-manage db_sync
  keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
  keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
  keystone-manage bootstrap --bootstrap-password $PW \
    --bootstrap-admin-url $KS/v3/ --bootstrap-internal-url $KS/v3/ \
    --bootstrap-public-url $KS/v3/ --bootstrap-region-id RegionOne
  uw keystone keystone 5000 /usr/bin/keystone-wsgi-public /etc/keystone/keystone-uwsgi.ini
  waitport 5000
  cat > $OSBOX/admin-openrc <<O
export OS_USERNAME=admin OS_PASSWORD=$PW OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default OS_AUTH_URL=$KS/v3 OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
O
  mkdir -p /root/.config/openstack
  cat > /root/.config/openstack/clouds.yaml <<Y
clouds:
  osbox:
    auth:
      auth_url: $KS/v3
      username: admin
      password: $PW
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
Y
  . $OSBOX/admin-openrc
  # service project, users, catalog (one python process: much faster than many CLI calls)
  /usr/bin/python3 - <<PYX
import openstack
c = openstack.connect(cloud='osbox')
svc = c.identity.find_project('service') or c.identity.create_project(name='service', domain_id='default')
admin = c.identity.find_role('admin')
for r in ('member','reader','service'):
    c.identity.find_role(r) or c.identity.create_role(name=r)
srole = c.identity.find_role('service')
for u in ('glance','placement','nova','neutron'):
    usr = c.identity.find_user(u, domain_id='default') or c.identity.create_user(name=u, password='$PW', domain_id='default')
    c.identity.assign_project_role_to_user(svc, usr, admin)
    c.identity.assign_project_role_to_user(svc, usr, srole)
eps = {'image':('glance','http://127.0.0.1:9292'), 'placement':('placement','http://127.0.0.1:8778'),
       'compute':('nova','http://127.0.0.1:8774/v2.1'), 'network':('neutron','http://127.0.0.1:9696')}
for typ,(name,url) in eps.items():
    s = c.identity.find_service(name) or c.identity.create_service(name=name, type=typ)
    have = {e.interface for e in c.identity.endpoints(service_id=s.id)}
    for itf in ('public','internal','admin'):
        if itf not in have:
            c.identity.create_endpoint(service_id=s.id, interface=itf, url=url, region_id='RegionOne')
print('keystone catalog ok')
PYX
  echo "keystone took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

phase_glance_placement() {
  local t0=$(date +%s)
  [ -f /etc/glance/glance-api.conf.dist ] || cp /etc/glance/glance-api.conf /etc/glance/glance-api.conf.dist
  mkdir -p /var/lib/glance/images /var/lib/glance/staging /var/lib/glance/tasks_work_dir
  chown -R glance:glance /var/lib/glance /var/log/glance
  cat > /etc/glance/glance-api.conf <<C
[DEFAULT]
bind_host = 127.0.0.1
log_dir = /var/log/glance
enabled_backends = fs:file
workers = 1
[database]
connection = mysql+pymysql://glance:$PW@127.0.0.1/glance
$(authtoken glance)
[paste_deploy]
flavor = keystone
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = /var/lib/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = /var/lib/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = /var/lib/glance/tasks_work_dir/
[oslo_concurrency]
lock_path = /var/lib/glance/lock
C
  runuser -u glance -- glance-manage db_sync
  uw glance glance 9292 /usr/bin/glance-wsgi-api /etc/glance/glance-api-uwsgi.ini

  [ -f /etc/placement/placement.conf.dist ] || cp /etc/placement/placement.conf /etc/placement/placement.conf.dist
  cat > /etc/placement/placement.conf <<C
[DEFAULT]
log_dir = /var/log/placement
[api]
auth_strategy = keystone
$(authtoken placement)
[placement_database]
connection = mysql+pymysql://placement:$PW@127.0.0.1/placement
C
  runuser -u placement -- placement-manage db sync
  uw placement placement 8778 /usr/bin/placement-api /etc/placement/placement-api-uwsgi.ini
  waitport 9292; waitport 8778
  echo "glance+placement took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

phase_nova() {
  local t0=$(date +%s)
  [ -f /etc/nova/nova.conf.dist ] || cp /etc/nova/nova.conf /etc/nova/nova.conf.dist
  [ -f /etc/nova/nova-compute.conf.dist ] || cp /etc/nova/nova-compute.conf /etc/nova/nova-compute.conf.dist
  : > /etc/nova/nova-compute.conf   # drop ironic driver setting from nova-compute-ironic
  cat > /etc/nova/nova.conf <<C
[DEFAULT]
transport_url = rabbit://openstack:$PW@127.0.0.1:5672/
my_ip = 127.0.0.1
state_path = /var/lib/nova
log_dir = /var/log/nova
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
metadata_listen = 127.0.0.1
osapi_compute_workers = 1
compute_driver = fake.FakeDriver
cpu_allocation_ratio = 16.0
ram_allocation_ratio = 1.5
disk_allocation_ratio = 1.0
[api]
auth_strategy = keystone
[api_database]
connection = mysql+pymysql://nova:$PW@127.0.0.1/nova_api
[database]
connection = mysql+pymysql://nova:$PW@127.0.0.1/nova
$(authtoken nova)
$(ksauth service_user nova)
send_service_user_token = true
$(ksauth placement nova)
$(ksauth neutron neutron)
[glance]
region_name = RegionOne
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 30
[quota]
instances = -1
cores = -1
ram = -1
[vnc]
enabled = false
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
C
  mkdir -p /var/lib/nova/tmp; chown -R nova:nova /var/lib/nova /var/log/nova
  runuser -u nova -- nova-manage api_db sync
  runuser -u nova -- nova-manage cell_v2 map_cell0
  runuser -u nova -- nova-manage cell_v2 list_cells | grep -q ' cell1 ' || runuser -u nova -- nova-manage cell_v2 create_cell --name=cell1 --verbose
  runuser -u nova -- nova-manage db sync
  # one thread per process: nova-api hung for good here under parallel server creates
  # with 4 threads per process (eventlet-patched code in uwsgi threads)
  UW_PROCESSES=4 UW_THREADS=1 uw nova-api nova 8774 /usr/bin/nova-api-wsgi /etc/nova/nova-api-uwsgi.ini
  bg nova-conductor nova /usr/bin/nova-conductor --config-file /etc/nova/nova.conf
  bg nova-scheduler nova /usr/bin/nova-scheduler --config-file /etc/nova/nova.conf
  bg nova-compute nova /usr/bin/nova-compute --config-file /etc/nova/nova.conf
  waitport 8774
  echo "nova took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

phase_neutron() {
  local t0=$(date +%s)
  for f in neutron.conf plugins/ml2/ml2_conf.ini plugins/ml2/linuxbridge_agent.ini; do
    [ -f /etc/neutron/$f.dist ] || cp /etc/neutron/$f /etc/neutron/$f.dist; done
  cat > /etc/neutron/neutron.conf <<C
[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = rabbit://openstack:$PW@127.0.0.1:5672/
bind_host = 127.0.0.1
bind_port = 9696
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
state_path = /var/lib/neutron
log_dir = /var/log/neutron
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = mysql+pymysql://neutron:$PW@127.0.0.1/neutron
$(authtoken neutron)
$(ksauth nova nova)
[experimental]
linuxbridge = true
[agent]
root_helper = sudo neutron-rootwrap /etc/neutron/rootwrap.conf
[oslo_concurrency]
lock_path = /var/lib/neutron/lock
C
  cat > /etc/neutron/plugins/ml2/ml2_conf.ini <<C
[ml2]
type_drivers = local,flat,vlan
tenant_network_types = local
mechanism_drivers = linuxbridge
extension_drivers = port_security
[securitygroup]
enable_security_group = true
C
  cat > /etc/neutron/plugins/ml2/linuxbridge_agent.ini <<C
[linux_bridge]
physical_interface_mappings =
[vxlan]
enable_vxlan = false
[securitygroup]
enable_security_group = true
firewall_driver = noop
C
  mkdir -p /var/lib/neutron/lock; chown -R neutron:neutron /var/lib/neutron /var/log/neutron
  runuser -u neutron -- neutron-db-manage --config-file /etc/neutron/neutron.conf \
     --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head > $LOG/neutron-db-manage.log 2>&1
  bg neutron-server neutron /usr/bin/neutron-server --config-file /etc/neutron/neutron.conf \
     --config-file /etc/neutron/plugins/ml2/ml2_conf.ini
  bg neutron-linuxbridge-agent root /usr/bin/neutron-linuxbridge-agent --config-file /etc/neutron/neutron.conf \
     --config-file /etc/neutron/plugins/ml2/linuxbridge_agent.ini
  waitport 9696
  echo "neutron took $(( $(date +%s) - t0 ))s" | tee -a $LOG/timings.txt
}

phase_discover() {
  sleep 15
  runuser -u nova -- nova-manage cell_v2 discover_hosts --verbose
}

phase_stop() { # stop only what this script started (pids recorded in $RUN)
  for n in neutron-linuxbridge-agent neutron-server nova-compute nova-scheduler nova-conductor nova-api placement glance keystone; do
    [ -f $RUN/$n.pid ] || continue; p=$(cat $RUN/$n.pid)
    kids=$(ps -o pid= --ppid $p 2>/dev/null || true)
    gkids=$(for k in $kids; do ps -o pid= --ppid $k 2>/dev/null || true; done)
    kill $p $kids $gkids 2>/dev/null || true; rm -f $RUN/$n.pid
  done
  # privsep daemons spawned (via sudo) by the linuxbridge agent
  for p in $(ps -eo pid=,args= | awk '/privsep-helper --config-file \/etc\/neutron/ && !/awk/ {print $1}'); do kill $p || true; done
  rabbitmqctl -n rabbit@localhost stop 2>/dev/null || true; rm -f $RUN/rabbitmq.pid
  epmd -kill 2>/dev/null || true
  /etc/init.d/mariadb stop || true
}

# name:port of every daemon this script starts (port 0: no listening port to check)
SERVICES="keystone:5000 glance:9292 placement:8778 nova-api:8774 nova-conductor:0 nova-scheduler:0 nova-compute:0 neutron-server:9696 neutron-linuxbridge-agent:0"
alive() { [ -f $RUN/$1.pid ] && kill -0 "$(cat $RUN/$1.pid)" 2>/dev/null; }
listening() { [ "$1" = 0 ] || (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; }

phase_status() { # one line per service; exit 1 if any is down
  local bad=0
  mysqladmin --silent ping >/dev/null 2>&1 && echo "mariadb up" || { echo "mariadb DOWN"; bad=1; }
  listening 5672 && echo "rabbitmq up" || { echo "rabbitmq DOWN"; bad=1; }
  for sp in $SERVICES; do
    n=${sp%%:*}; port=${sp##*:}
    if alive $n && listening $port; then echo "$n up"; else echo "$n DOWN"; bad=1; fi
  done
  return $bad
}

MARIADB_PID=/run/mysqld/mysqld.pid
mariadb_alive() { # the pid file names a live (not zombie) process
  local st
  [ -f $MARIADB_PID ] || return 1
  st=$(ps -o stat= -p "$(cat $MARIADB_PID)" 2>/dev/null) || return 1
  case "$st" in Z*|"") return 1 ;; esac
}
mariadb_running() { # any live (not zombie) server process, with or without its pid file
  ps -C mariadbd,mysqld -o stat= 2>/dev/null | grep -qv '^Z'
}
mariadb_drop_stale_pid() { [ -f $MARIADB_PID ] && ! mariadb_alive && rm -f $MARIADB_PID; true; }

phase_health() { # restart whatever died, in dependency order, then wait for the APIs
  if ! mysqladmin --silent ping >/dev/null 2>&1; then
    # the init script gives up after its own wait; on a busy host mariadbd is still
    # recovering then, so wait for it to answer (3 min) before calling it failed
    # a killed server can linger as a zombie (a container's pid 1 may reap late);
    # mysqld_safe takes the pid file's zombie for a running server and refuses to start
    echo "restarting mariadb"; mariadb_drop_stale_pid; /etc/init.d/mariadb start || true
    for i in $(seq 1 180); do
      mysqladmin --silent ping >/dev/null 2>&1 && break
      # no server at all to wait for (the init script's attempt was refused): start
      # again; a server still in crash recovery may not have written its pid file yet
      if [ $((i % 30)) = 0 ] && ! mariadb_running; then
        mariadb_drop_stale_pid; /etc/init.d/mariadb start || true
      fi
      sleep 1
    done
    mysqladmin --silent ping >/dev/null 2>&1 || { echo "mariadb did not come back"; return 1; }
  fi
  if ! listening 5672; then
    echo "restarting rabbitmq"; export ERL_EPMD_ADDRESS=127.0.0.1
    bg rabbitmq rabbitmq /usr/sbin/rabbitmq-server; waitport 5672
    rabbitmqctl -n rabbit@localhost await_startup >/dev/null 2>&1 || true
  fi
  for ini in $RUN/*-uwsgi.ini; do # a box configured with threaded workers (see uw)
    [ -f "$ini" ] || continue
    grep -qE '^threads = ([2-9]|[1-9][0-9])' "$ini" || continue
    n=$(basename "$ini" -uwsgi.ini); echo "$n: one thread per worker (restarts it)"
    sed -i -E 's/^threads = .*/threads = 1/; s/^processes = .*/processes = 4/' "$ini"
    [ -f $RUN/$n.pid ] && { kill -9 -- -"$(cat $RUN/$n.pid)" 2>/dev/null || true; }
    rm -f $RUN/$n.pid # restarted below, even if the kill has not landed yet
  done
  for sp in $SERVICES; do
    n=${sp%%:*}; port=${sp##*:}
    alive $n && listening $port && continue
    [ -f $RUN/$n.cmd ] || { echo "$n was never started here: run 'setup.sh configure'"; return 1; }
    echo "restarting $n"
    # started with setsid: its process group holds what it forked (uwsgi workers keep
    # the port after their master died)
    { [ -f $RUN/$n.pid ] && kill -9 -- -"$(cat $RUN/$n.pid)" 2>/dev/null; } || true; sleep 1
    eval "bg $n $(cat $RUN/$n.cmd)"
  done
  for sp in $SERVICES; do port=${sp##*:}; [ "$port" = 0 ] || waitport $port; done
  phase_status
}

phase_ready() { # nova has a compute service and neutron a linuxbridge agent, both up
  . $OSBOX/admin-openrc
  for i in $(seq 1 90); do
    c=$(openstack compute service list --service nova-compute -f value -c State 2>/dev/null | grep -c up || true)
    a=$(openstack network agent list --agent-type linux-bridge -f value -c Alive 2>/dev/null | grep -ci true || true)
    [ "$c" -ge 1 ] && [ "$a" -ge 1 ] && { echo "ready: $c compute, $a linuxbridge agent"; return 0; }
    sleep 2
  done
  echo "not ready: nova-compute up=$c, linuxbridge agents alive=$a"; return 1
}
## __DISPATCH__
case "$PHASE" in
  install) phase_install ;;
  infra) phase_infra ;;
  keystone) phase_keystone ;;
  glance_placement) phase_glance_placement ;;
  nova) phase_nova ;;
  neutron) phase_neutron ;;
  discover) phase_discover ;;
  stop) phase_stop ;;
  status) phase_status ;;
  health) phase_health ;;
  ready) phase_ready ;;
  configure) T=$(date +%s); phase_infra; phase_keystone; phase_glance_placement; phase_nova; phase_neutron; phase_discover; phase_ready
             echo "configure+start took $(( $(date +%s) - T ))s" | tee -a $LOG/timings.txt ;;
  all) T=$(date +%s); phase_install; phase_infra; phase_keystone; phase_glance_placement; phase_nova; phase_neutron; phase_discover; phase_ready
       echo "setup.sh all took $(( $(date +%s) - T ))s" | tee -a $LOG/timings.txt ;;
esac
