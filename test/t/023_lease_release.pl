# In-flight leases cannot leak: a backend that ends (terminated, or killed
# with SIGKILL so that the postmaster resets shared memory) frees the slots
# it held; a lease times out while its holder lives on; a settle in any
# session frees it; and the limits themselves survive the crash.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('lease_release');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "restart_after_crash = on");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', q{
	SELECT set_concurrency_limit('llm', 3);
	SELECT set_rate_limit('llm', 1000000, '1 day');
	SELECT set_concurrency_limit('slow', 1, lease_timeout => '2 seconds');
});

my $try = q{SELECT success || ' ' || reason FROM allocate_tokens('llm', 10, 'high')};
my $leases = q{SELECT count(*) FROM rate_limiter_leases()};

# Two holders: A takes two slots, B the third.
my $a = $node->background_psql('postgres', on_error_stop => 0);
my $b = $node->background_psql('postgres', on_error_stop => 0);
is($a->query_safe(q{SELECT count(*) FROM generate_series(1, 2) g,
	LATERAL allocate_tokens('llm', 10 + 0 * g, 'high') r WHERE r.success}), '2', 'A holds two slots');
is($b->query_safe($try), 'true granted', 'B holds the third');
my $a_pid = $a->query_safe('SELECT pg_backend_pid()');
my $b_pid = $b->query_safe('SELECT pg_backend_pid()');
is($node->safe_psql('postgres', $try), 'false concurrency_limit_exceeded', 'the fourth is denied');
is($node->safe_psql('postgres', $leases), '3', 'three leases are held');

# B is terminated: its slot is free once it is gone.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($b_pid)");
eval { $b->quit; };
$node->poll_query_until('postgres', "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $b_pid)")
  or die 'B did not exit';
is($node->safe_psql('postgres', $leases), '2', 'the terminated backend freed its lease');
# This psql session takes the slot and exits, which frees it again.
is($node->safe_psql('postgres', $try), 'true granted', 'the freed slot is granted');

# A is killed: the postmaster resets shared memory, and every lease is free.
my $offset = -s $node->logfile;
kill 'KILL', $a_pid;
eval { $a->quit; };
$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
ok($node->log_contains(qr/terminated by signal 9/, $offset), 'the postmaster saw the crash');
is($node->safe_psql('postgres', $leases), '0', 'no lease survives the crash');
my $c = $node->background_psql('postgres', on_error_stop => 0);
is($c->query_safe(q{SELECT string_agg(r.reason, ',' ORDER BY g) FROM generate_series(1, 4) g,
	LATERAL allocate_tokens('llm', 10 + 0 * g, 'high') r}),
	'granted,granted,granted,concurrency_limit_exceeded',
	'after the crash all three slots are free again, and the limit still holds');

# A settle in another session frees one of C's slots at its commit (the
# newest grant is C's: denials write no row).
my $id = $node->safe_psql('postgres',
	q{SELECT max(id) FROM token_usage WHERE user_id = 'llm'});
$node->safe_psql('postgres', "SELECT settle_tokens($id, 5)");
is($c->query_safe($try), 'true granted', 'a settle in another session freed the slot');
$c->quit;

# A lease times out while its holder lives on.
my $d = $node->background_psql('postgres', on_error_stop => 0);
is($d->query_safe(q{SELECT reason FROM allocate_tokens('slow', 1, 'high')}), 'granted', 'D holds slow');
is($node->safe_psql('postgres', q{SELECT reason FROM allocate_tokens('slow', 1, 'high')}),
	'concurrency_limit_exceeded', 'the slot is taken');
sleep 3;
is($node->safe_psql('postgres', q{SELECT reason FROM allocate_tokens('slow', 1, 'high')}),
	'granted', 'after lease_timeout the slot is free although D is still connected');
is($d->query_safe('SELECT 1'), '1', 'D is still there');
$d->quit;

$node->stop;
done_testing();
