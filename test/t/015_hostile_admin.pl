# Database commands that fail or roll back must leave the extension's
# shared state and workers alone: an unprivileged role issuing DROP
# DATABASE (plain, or in a savepoint it rolls back and then sits on) does
# not keep a database's worker away, and BEGIN; DROP EXTENSION; CREATE
# EXTENSION; ROLLBACK leaves the live installation's counters, rules and
# queued usage rows as they were.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hostile_admin');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.flush_interval = '50ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher' AND datname = 'app'");
}
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher' AND datname = 'app'")
  or die 'no worker for app';
my $pid = worker_pid();

# A DROP DATABASE the server refuses (not the owner) does not stop the worker.
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app', extra_params => [ '-U', 'mallory' ]);
like($err, qr/must be owner of database app/, 'mallory may not drop app');
is(worker_pid(), $pid, 'the worker of app kept running');

# Nor does one in a savepoint that is rolled back while the session stays
# in its transaction.
my $mallory = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'mallory' ]);
$mallory->query_safe('BEGIN');
$mallory->query_safe('SAVEPOINT s');
$mallory->query('DROP DATABASE app');
$mallory->query('ROLLBACK TO SAVEPOINT s');
sleep 2;
is(worker_pid(), $pid, 'a rolled-back DROP DATABASE in an open transaction keeps the worker');
$node->safe_psql('app', "SELECT set_rate_limit('h_user', 10, '3650 days');
                         SELECT allocate_tokens('h_user', 1, 'high') FROM generate_series(1, 3);");
is($node->safe_psql('app', "SELECT rate_limiter_flush() >= 0; SELECT count(*) FROM token_usage"), "t\n3",
	'and its usage rows are written');
$mallory->query('ROLLBACK');
$mallory->quit;

# BEGIN; DROP EXTENSION; CREATE EXTENSION; ROLLBACK while another session
# uses the installation.
my $user = $node->background_psql('app');
is($user->query_safe("SELECT tokens_remaining FROM allocate_tokens('h_user', 1, 'high')"), '6',
	'the user has 6 tokens left');
$node->safe_psql('app', 'BEGIN; DROP EXTENSION rate_limiter; CREATE EXTENSION rate_limiter; ROLLBACK;');
is($user->query_safe("SELECT tokens_remaining FROM allocate_tokens('h_user', 1, 'high')"), '5',
	'after a rolled-back DROP and CREATE EXTENSION the counter still counts');
is($node->safe_psql('app', "SELECT used FROM get_rate_limit_status('h_user') WHERE scope = 'user'"), '5',
	'for every session');
is($node->safe_psql('app', "SELECT rate_limiter_flush() >= 0; SELECT count(*) FROM token_usage"), "t\n5",
	'and no queued usage row was lost');
$user->quit;
is(worker_pid(), $pid, 'the worker of app is still the same');

$node->stop;
done_testing();
