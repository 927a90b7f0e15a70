# In-flight slots behind pgbouncer in transaction pooling: a grant's slot
# belongs to the grant, not to the client's connection.  The client that
# allocated leaves, its server backend stays in the pool and keeps the
# slot; a settle from another client, run by whichever server backend the
# pool hands it, frees it at commit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Time::HiRes qw(usleep);
use Test::More;

my $pgbouncer = -x '/usr/sbin/pgbouncer' ? '/usr/sbin/pgbouncer' : `command -v pgbouncer`;
chomp $pgbouncer;
plan skip_all => 'pgbouncer is not installed (scripts/test.sh installs it)' unless $pgbouncer;

my $node = PostgreSQL::Test::Cluster->new('pgbouncer_leases');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION rate_limiter;
	SELECT set_concurrency_limit('pooled', 1);
	SELECT set_rate_limit('pooled', 1000000, '1 day');
});

my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $node_port = $node->port;
open(my $auth, '>', "$dir/users.txt") or die $!;
print $auth qq{"postgres" ""\n};
close $auth;
open(my $ini, '>', "$dir/pgbouncer.ini") or die $!;
print $ini <<"INI";
[databases]
postgres = host=$host port=$node_port dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = 2
min_pool_size = 2
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
close $ini;
IPC::Run::run([ $pgbouncer, '-d', "$dir/pgbouncer.ini" ]) or die "pgbouncer did not start";

# One client connection through the pool per call.
sub pooled
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	for my $try (1 .. 50)
	{
		($out, $err) = ('', '');
		last if IPC::Run::run([ 'psql', '-X', '-At', '-h', '127.0.0.1', '-p', $port, '-U', 'postgres',
			'-d', 'postgres', '-c', $sql ], '>', \$out, '2>', \$err);
		usleep(100_000);    # pgbouncer may still be opening its pool
	}
	chomp $out;
	return $out;
}

my $id = pooled(q{SELECT allocation_id FROM allocate_tokens('pooled', 10, 'high')});
like($id, qr/^\d+$/, 'a client allocates through the pool and leaves');
is(pooled(q{SELECT reason FROM allocate_tokens('pooled', 10, 'high')}), 'concurrency_limit_exceeded',
	'the slot stays held: the grant is unsettled');
my $holder = $node->safe_psql('postgres', 'SELECT pid FROM rate_limiter_leases()');
ok($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $holder") eq '1',
	'the server backend that allocated is still in the pool');
is(pooled("SELECT tokens_refunded FROM settle_tokens($id, 4)"), '6',
	'another client settles, on whichever backend the pool gives it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rate_limiter_leases()'), '0',
	'the settle freed the slot at its commit');
is(pooled(q{SELECT reason FROM allocate_tokens('pooled', 10, 'high')}), 'granted',
	'and the next client gets it');

my $pid = slurp_file("$dir/pgbouncer.pid");
chomp $pid;
kill 'TERM', $pid;
$node->stop;
done_testing();
