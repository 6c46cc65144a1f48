using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Host.Infrastructure;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The service's PostgreSQL connections prepare repeated statements unless the connection string says otherwise, and
/// <c>Max Auto Prepare=0</c>, the way out documented for Npgsql's auto-prepare corruption (see PersistenceSetup.Tuned),
/// is kept.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DatabaseConnectionTests(ConversationsApp app)
{
    [Fact]
    public async Task The_running_service_prepares_repeated_statements_and_keeps_session_state()
    {
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        await using var connection = store.Storage.Database.CreateConnection();

        var settings = new NpgsqlConnectionStringBuilder(connection.ConnectionString);

        Assert.Equal((100, 2, true), (settings.MaxAutoPrepare, settings.AutoPrepareMinUsages, settings.NoResetOnClose));
    }

    [Theory]
    [InlineData("Host=db;Database=chat;Max Auto Prepare=0", 0, true)]
    [InlineData("Host=db;Database=chat;Max Auto Prepare=20;No Reset On Close=false", 20, false)]
    public void What_the_connection_string_sets_is_kept(string given, int maxAutoPrepare, bool noResetOnClose)
    {
        var tuned = new NpgsqlConnectionStringBuilder(PersistenceSetup.Tuned(given));

        Assert.Equal((maxAutoPrepare, noResetOnClose), (tuned.MaxAutoPrepare, tuned.NoResetOnClose));
    }
}
