# Dropped installations give back what they held in shared memory:
# DROP EXTENSION and DROP DATABASE free their counters, rules and
# revocations at commit, and a clean restart does not bring them back, so a
# re-created installation starts with the whole counter table.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('reclaim');
$node->init;
# 2,000 counters in one partition: "full" is exact.  One role fills the
# table here, so no key budgets.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.max_keys = 2000
rate_limiter.usage_log = sync
rate_limiter.role_key_share = 1
rate_limiter.configured_key_reserve = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE monitor');
$node->safe_psql('monitor', 'CREATE EXTENSION rate_limiter');

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }
# Metrics are server-wide; read them where the extension stays installed.
sub metric { return sql('monitor', "SELECT get_performance_metrics()->>'$_[0]'"); }

sub install
{
	my ($db) = @_;
	sql($db, q{CREATE EXTENSION rate_limiter;
SELECT set_default_rate_limit(10, '3650 days');
SELECT set_rate_limit('r_' || g, 100, '3650 days') FROM generate_series(1, 50) g;
SELECT revoke_token('tok_' || g) FROM generate_series(1, 5) g;});
}

# Calls allocate_tokens for users prefix1 .. prefixN; "granted refused".
sub fill
{
	my ($db, $prefix, $n) = @_;
	my ($ret, $out, $err) = $node->psql($db, qq{
DO \$\$ DECLARE g int; ok int := 0; refused int := 0; BEGIN
  FOR g IN 1..$n LOOP
    BEGIN
      PERFORM allocate_tokens('$prefix' || g, 1, 'high');
      ok := ok + 1;
    EXCEPTION WHEN SQLSTATE 'RL507' THEN refused := refused + 1;
    END;
  END LOOP;
  RAISE NOTICE 'fill % %', ok, refused;
END \$\$;});
	my ($ok, $refused) = $err =~ /fill (\d+) (\d+)/;
	return defined($ok) ? "$ok $refused" : "error: $err";
}

install('postgres');
is(fill('postgres', 'a', 1990), '1990 0', 'the first installation fills 1,990 of 2,000 counters');
cmp_ok(metric('rules_in_use'), '>=', 51, 'its rules are in the shared table');

# DROP EXTENSION: everything of that installation is reclaimed at commit.
sql('postgres', 'DROP EXTENSION rate_limiter');
is(metric('keys_in_use'), '0', 'DROP EXTENSION frees its counters');
is(metric('rules_in_use'), '0', 'and its rules');
install('postgres');
is(fill('postgres', 'b', 2000), '2000 0', 're-created, it fills the whole table again without RL507');
sql('postgres', "SELECT is_token_revoked('tok_1')");  # loads the new installation's revocations
is(sql('postgres', 'SELECT cached_total FROM revocation_cache_status()'), '5',
	'the dropped revocations left the revocation cache');

# A rolled-back DROP EXTENSION reclaims nothing.
sql('postgres', 'BEGIN; DROP EXTENSION rate_limiter; ROLLBACK;');
is(metric('keys_in_use'), '2000', 'a rolled-back drop keeps the counters');
is(sql('postgres', "SELECT tokens_remaining FROM allocate_tokens('b7', 1, 'high')"), '8',
	'and they still count');

# DROP DATABASE, with a nearly full table shared by two databases.
sql('postgres', 'DROP EXTENSION rate_limiter');
sql('postgres', 'CREATE DATABASE app2');
install('postgres');
install('app2');
is(fill('app2', 'c', 1500), '1500 0', 'a second database takes 1,500 counters');
is(fill('postgres', 'd', 600), '500 100', 'the first gets the other 500 and then RL507');
sql('postgres', 'DROP DATABASE app2');
is(metric('keys_in_use'), '500', 'DROP DATABASE frees its counters');
is(fill('postgres', 'e', 1500), '1500 0', 'and the other database can use them');

# A clean restart saves only live installations: counters of an extension
# dropped before the shutdown do not come back.
sql('postgres', 'DROP EXTENSION rate_limiter');
install('postgres');
is(fill('postgres', 'f', 1990), '1990 0', 'a fresh installation fills the table again');
sql('postgres', 'DROP EXTENSION rate_limiter');
$node->restart;
install('postgres');
is(metric('keys_in_use'), '0', 'after a restart nothing of the dropped installation is back');
is(fill('postgres', 'g', 2000), '2000 0', 'the re-created installation has the whole table');
$node->restart;
is(metric('keys_in_use'), '2000', 'a live installation keeps its counters across a restart');
is(sql('postgres', "SELECT tokens_remaining FROM allocate_tokens('g9', 1, 'high')"), '8',
	'and they still count');

$node->stop;
done_testing();
